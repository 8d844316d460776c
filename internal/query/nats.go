package query

import (
	"context"
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/telemetry"
)

// enqueue writes the job's outbox row inside tx. The job's format, the
// stream and its lanes are bus's (bus/query.go, bus/preagg.go), shared with
// the workers. The subject follows the query's target: a warehouse lane,
// or the pre-aggregate query subject (which has no lanes), so the reaper's
// re-notifications reach the right workers too.
func (s *Service) enqueue(ctx context.Context, tx store.Tx, q store.Query, msgID string, now time.Time) error {
	payload, _ := json.Marshal(bus.QueryJob{JobID: msgID, Payload: bus.QueryJobPayload{QueryUUID: q.QueryUUID}})
	subject := bus.QueryLaneSubject(s.cfg.Subject, q.Lane)
	if q.Target == TargetPreAgg {
		subject = s.cfg.PreAggSubject
	}
	return tx.OutboxInsert(ctx, store.OutboxMsg{ID: s.ids.Next(), Subject: subject,
		MsgID: msgID, Payload: payload, CreatedAt: now, AvailableAt: now, TraceParent: telemetry.TraceParent(ctx)})
}
