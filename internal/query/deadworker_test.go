package query_test

import (
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

// A worker that claims a query and dies (no heartbeats, no result) does not
// leave it executing forever: the reaper re-queues it, a live worker runs
// it, and the dead worker's late heartbeat is told to stop.
func TestQueryDeadWorkerIsRequeued(t *testing.T) {
	t.Parallel()
	b := setup(t, opts{nats: true, staleWorker: time.Second, redeliverAfter: time.Second})
	sub := b.submit("select 41 + 1 as answer", "interactive", false)
	ctx := t.Context()
	if _, err := b.api.QueryClaim(ctx, sub.QueryUUID, "doomed"); err != nil {
		t.Fatalf("claim by the doomed worker: %v", err)
	}
	b.waitRecord(sub.QueryUUID, 20*time.Second, "re-queued after the worker went silent", func(q api.QueryRecord) bool {
		return q.Status == api.QueryQueued && q.WorkerID == ""
	})
	if err := b.api.QueryHeartbeat(ctx, sub.QueryUUID, "doomed"); client.StatusOf(err) != 409 {
		t.Fatalf("late heartbeat from the dead worker: %v, want 409", err)
	}
	b.startWorker(4)
	q := b.waitRecord(sub.QueryUUID, 20*time.Second, "ready on a live worker", func(q api.QueryRecord) bool { return q.Status == api.QueryReady })
	if q.WorkerID == "doomed" || q.TotalRows != 1 {
		t.Fatalf("query finished by %q with %d rows; want a live worker and 1 row", q.WorkerID, q.TotalRows)
	}
}
