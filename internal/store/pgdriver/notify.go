package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/store"
)

// CommandsToNotify reads commands_notify_idx in order: the scan stops at
// the first row not yet due, so its cost is the batch, not the history.
func (q querier) CommandsToNotify(ctx context.Context, now time.Time, limit int) ([]store.Notice, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := q.db.Query(ctx, `SELECT event_id, execution_id, command_id, step, pool, status, publishes, notify_at, trace_parent
		FROM commands WHERE notify_at IS NOT NULL AND notify_at <= $1
		ORDER BY notify_at, event_id LIMIT $2`, ts(now), limit)
	list, err := collect(rows, err, func(row pgx.Row) (store.Notice, error) {
		var n store.Notice
		err := row.Scan(&n.EventID, &n.ExecutionID, &n.CommandID, &n.Step, &n.Pool, &n.Status, &n.Publishes, &n.NotifyAt, &n.TraceParent)
		n.NotifyAt = n.NotifyAt.UTC()
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgdriver: read command notifications due: %w", err)
	}
	return list, nil
}

// CommandNotified is one UPDATE over unnest'ed arrays. FOR UPDATE SKIP
// LOCKED leaves a row a claim (or any other writer) holds: waiting for it
// would queue the relay behind the claims its own messages caused, and
// taking row locks in another order than a group-committed batch could
// deadlock. A skipped row stays pending and is published again with the
// same Nats-Msg-Id, which JetStream drops as a duplicate.
func (t *tx) CommandNotified(ctx context.Context, marks []store.Notified) (int, error) {
	if len(marks) == 0 {
		return 0, nil
	}
	ids := make([]int64, len(marks))
	pubs := make([]int32, len(marks))
	for i, m := range marks {
		ids[i], pubs[i] = m.EventID, int32(m.Publishes)
	}
	tag, err := t.tx.Exec(ctx, `UPDATE commands AS c SET notify_at = NULL
		FROM (SELECT c2.event_id FROM commands AS c2
			JOIN unnest($1::bigint[], $2::int[]) AS m(event_id, publishes)
			  ON c2.event_id = m.event_id AND c2.publishes = m.publishes
			WHERE c2.notify_at IS NOT NULL
			ORDER BY c2.event_id
			FOR UPDATE OF c2 SKIP LOCKED) AS done
		WHERE c.event_id = done.event_id`, ids, pubs)
	if err != nil {
		return 0, fmt.Errorf("pgdriver: clear %d sent command notifications: %w", len(marks), err)
	}
	return int(tag.RowsAffected()), nil
}
