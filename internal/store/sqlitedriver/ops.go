package sqlitedriver

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// DBClock is this process's clock: SQLite runs in it and has no clock of
// its own.
func (q *queries) DBClock(context.Context) (time.Time, error) { return time.Now().UTC(), nil }

// OpsStats reads each figure from an index, as the PostgreSQL driver does.
func (q *queries) OpsStats(ctx context.Context, now time.Time) (store.OpsStats, error) {
	s := store.NewOpsStats()
	var outboxOldest, unclaimedOldest, expiredOldest sql.NullInt64
	var running int64
	n := micros(now)
	err := q.queryRow(ctx, `SELECT
		(SELECT count(*) FROM outbox) + (SELECT count(*) FROM commands WHERE notify_at IS NOT NULL),
		(SELECT min(t) FROM (SELECT min(available_at) AS t FROM outbox
			UNION ALL SELECT min(notify_at) FROM commands WHERE notify_at IS NOT NULL)),
		(SELECT count(*) FROM commands WHERE status = 'issued'),
		(SELECT min(available_at) FROM commands WHERE status = 'issued' AND available_at <= ?),
		(SELECT count(*) FROM commands WHERE status IN ('claimed', 'running') AND lease_expires_at < ?),
		(SELECT min(lease_expires_at) FROM commands WHERE status IN ('claimed', 'running') AND lease_expires_at < ?),
		(SELECT count(*) FROM executions WHERE status = 'running')`, n, n, n).
		Scan(&s.OutboxDepth, &outboxOldest, &s.CommandsUnclaimed, &unclaimedOldest, &s.ExpiredLeases, &expiredOldest, &running)
	if err != nil {
		return store.OpsStats{}, fmt.Errorf("sqlitedriver: ops stats: %w", err)
	}
	s.OutboxOldest, s.UnclaimedOldest, s.ExpiredOldest = fromNullMicros(outboxOldest), fromNullMicros(unclaimedOldest), fromNullMicros(expiredOldest)
	if s.OutboxOldest != nil && s.OutboxOldest.After(now) {
		s.OutboxOldest = nil // only deferred retries: nothing is due
	}
	s.Executions[api.ExecRunning] = running
	rows, err := q.query(ctx, `SELECT CASE WHEN target = 'preagg' THEN '`+store.QueueLanePreAgg+`' ELSE lane END, count(*)
		FROM queries WHERE status = 'queued' GROUP BY 1`)
	if err != nil {
		return store.OpsStats{}, fmt.Errorf("sqlitedriver: ops stats: queued queries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var lane string
		var c int64
		if err := rows.Scan(&lane, &c); err != nil {
			return store.OpsStats{}, fmt.Errorf("sqlitedriver: ops stats: queued queries: %w", err)
		}
		s.QueriesQueued[lane] += c
	}
	if err := rows.Err(); err != nil {
		return store.OpsStats{}, fmt.Errorf("sqlitedriver: ops stats: queued queries: %w", err)
	}
	return s, nil
}
