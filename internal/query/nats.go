package query

import (
	"context"
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// enqueue writes the job's outbox row inside tx. The job's format, the
// stream and its lanes are bus's (bus/query.go), shared with the workers.
func (s *Service) enqueue(ctx context.Context, tx store.Tx, q store.Query, msgID string, now time.Time) error {
	payload, _ := json.Marshal(bus.QueryJob{JobID: msgID, Payload: bus.QueryJobPayload{QueryUUID: q.QueryUUID}})
	return tx.OutboxInsert(ctx, store.OutboxMsg{ID: s.ids.Next(), Subject: bus.QueryLaneSubject(s.cfg.Subject, q.Lane),
		MsgID: msgID, Payload: payload, CreatedAt: now, AvailableAt: now})
}
