package sqlitedriver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// CommandsToNotify reads commands_notify_idx in order: the scan stops at
// the first row not yet due, so its cost is the batch, not the history.
func (q *queries) CommandsToNotify(ctx context.Context, now time.Time, limit int) ([]store.Notice, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := q.query(ctx, `SELECT event_id, execution_id, command_id, step, pool, status, publishes, notify_at, trace_parent
		FROM commands WHERE notify_at IS NOT NULL AND notify_at <= ?
		ORDER BY notify_at, event_id LIMIT ?`, micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: read command notifications due: %w", err)
	}
	return collect(rows, func(s scanner) (store.Notice, error) {
		var n store.Notice
		var at int64
		err := s.Scan(&n.EventID, &n.ExecutionID, &n.CommandID, &n.Step, &n.Pool, &n.Status, &n.Publishes, &at, &n.TraceParent)
		n.NotifyAt = fromMicros(at)
		return n, err
	}, "read command notifications due")
}

// sqlCommandNotified takes the marks as one JSON array of [event_id,
// publishes] pairs, so one prepared statement serves any batch size.
const sqlCommandNotified = `UPDATE commands SET notify_at = NULL
	WHERE notify_at IS NOT NULL AND event_id IN (
		SELECT c.event_id FROM json_each(?) AS m
		JOIN commands AS c ON c.event_id = m.value->>0 AND c.publishes = m.value->>1)`

// CommandNotified clears the marks' notifications in one statement. SQLite
// has one writer at a time, so nothing can change a row between the check
// of publishes and the clear.
func (t *tx) CommandNotified(ctx context.Context, marks []store.Notified) (int, error) {
	if len(marks) == 0 {
		return 0, nil
	}
	pairs := make([][2]int64, len(marks))
	for i, m := range marks {
		pairs[i] = [2]int64{m.EventID, int64(m.Publishes)}
	}
	list, err := json.Marshal(pairs)
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: clear sent command notifications: %w", err)
	}
	res, err := t.exec(ctx, sqlCommandNotified, string(list))
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: clear %d sent command notifications: %w", len(marks), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: clear %d sent command notifications: %w", len(marks), err)
	}
	return int(n), nil
}
