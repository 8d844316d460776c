package query

import (
	"context"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// addTarget inserts a queued or executing query of the given target.
func (f *reapFixture) addTarget(uuid, target string, status api.QueryStatus, age time.Duration, worker string) {
	f.t.Helper()
	created := f.now.Add(-age)
	err := f.st.Do(f.t.Context(), 0, func(ctx context.Context, tx store.Tx) error {
		return tx.QueryInsert(ctx, store.Query{QueryUUID: uuid, SQL: "select 1", Lane: LaneInteractive, Status: status,
			WorkerID: worker, PublishedAt: &created, CreatedAt: created, UpdatedAt: created, Kind: KindMetric, Target: target,
			MetricQuery: []byte(`{"exploreName":"m"}`), PreAggregate: []byte(`{"hit":true,"name":"p"}`)})
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// outboxSubjects maps each outbox row's query id (the job id before '#')
// to its subject.
func (f *reapFixture) outboxSubjects() map[string]string {
	f.t.Helper()
	msgs, err := store.ReadValue(f.t.Context(), f.st, func(q store.Querier) ([]store.OutboxMsg, error) {
		return q.OutboxFetch(f.t.Context(), f.now.Add(time.Hour), 100)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range msgs {
		j, err := bus.DecodeQueryJob(m.Payload)
		if err != nil {
			f.t.Fatal(err)
		}
		out[j.Payload.QueryUUID] = m.Subject
	}
	return out
}

// The reaper re-notifies a query on the subject of its target: a
// pre-aggregate query on the pre-aggregate query subject (a warehouse
// worker would run its DuckDB SQL on the warehouse), a warehouse query on
// its lane.
func TestReapRepublishesByTarget(t *testing.T) {
	t.Parallel()
	f := newReapFixture(t, true)
	f.addTarget("lost-preagg", TargetPreAgg, api.QueryQueued, 20*time.Second, "")
	f.addTarget("lost-warehouse", TargetWarehouse, api.QueryQueued, 20*time.Second, "")
	f.addTarget("dead-preagg", TargetPreAgg, api.QueryExecuting, 2*time.Minute, "w1")
	if n, err := f.s.RenotifyLost(t.Context(), f.now, 10*time.Second); err != nil || n != 2 {
		t.Fatalf("RenotifyLost = %d, %v; want 2", n, err)
	}
	if n, err := f.s.RequeueStale(t.Context(), f.now); err != nil || n != 1 {
		t.Fatalf("RequeueStale = %d, %v; want 1", n, err)
	}
	got := f.outboxSubjects()
	want := map[string]string{
		"lost-preagg":    bus.DefaultPreAggQuerySubject,
		"dead-preagg":    bus.DefaultPreAggQuerySubject,
		"lost-warehouse": bus.QueryLaneSubject(bus.DefaultQuerySubject, LaneInteractive),
	}
	for uuid, subject := range want {
		if got[uuid] != subject {
			t.Errorf("%s was re-notified on %q, want %q (all: %v)", uuid, got[uuid], subject, got)
		}
	}
	if q := f.get("dead-preagg"); q.Status != api.QueryQueued || q.Target != TargetPreAgg {
		t.Errorf("re-queued pre-aggregate query = %s target %q; want queued, still served from the pre-aggregate", q.Status, q.Target)
	}
}
