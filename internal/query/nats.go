package query

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// The query stream's contract lives in bus (bus/query.go), shared with
// warehouse workers; these names are the server side's view of it.
const (
	DefaultStream     = "WAREHOUSE_QUERY_JOBS"
	DefaultSubject    = "warehouse.query.jobs"
	DefaultConsumer   = "worker-warehouse" // background lane (and bare-subject jobs)
	InteractiveSuffix = bus.QueryInteractiveSuffix
)

// Job is the NATS payload: {jobId, payload: {queryUuid}, traceHeader?}.
type Job = bus.QueryJob

// JobPayload carries only the query's id.
type JobPayload = bus.QueryJobPayload

// DecodeJob parses a job strictly.
func DecodeJob(b []byte) (Job, error) { return bus.DecodeQueryJob(b) }

// LaneSubject is the subject a lane's jobs are published on.
func LaneSubject(prefix, lane string) string { return bus.QueryLaneSubject(prefix, lane) }

// enqueue writes the job's outbox row inside tx.
func (s *Service) enqueue(ctx context.Context, tx store.Tx, q store.Query, msgID string, now time.Time) error {
	payload, _ := json.Marshal(Job{JobID: msgID, Payload: JobPayload{QueryUUID: q.QueryUUID}})
	return tx.OutboxInsert(ctx, store.OutboxMsg{ID: s.ids.Next(), Subject: LaneSubject(s.cfg.Subject, q.Lane),
		MsgID: msgID, Payload: payload, CreatedAt: now, AvailableAt: now})
}

// Ensure creates the query stream and lane consumers when missing (see
// bus.EnsureQueryStream).
func Ensure(ctx context.Context, js jetstream.JetStream, stream, subject, consumer string, storage jetstream.StorageType, maxAckPending int) error {
	return bus.EnsureQueryStream(ctx, js, stream, subject, consumer, storage, maxAckPending)
}

// StorageType maps the NATS_STORAGE setting.
func StorageType(s string) jetstream.StorageType { return bus.StorageType(s) }

// Waiting reports, for health, whether queued queries have no worker
// pulling: the stall the seeds warn about.
func Waiting(ctx context.Context, js jetstream.JetStream, stream, consumer string) (pulling int, err error) {
	return bus.QueryWaiting(ctx, js, stream, consumer)
}
