package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// DBClock is one round trip that reads clock_timestamp(): the time the
// database evaluates it, not the start of the transaction as now() is.
func (q querier) DBClock(ctx context.Context) (time.Time, error) {
	var t time.Time
	if err := q.db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("pgdriver: database clock: %w", err)
	}
	return t.UTC(), nil
}

// OpsStats reads each figure from an index: the outbox's available_at
// index, the partial index of pending command notifications, that of live
// commands, that of running executions and that of queued queries.
func (q querier) OpsStats(ctx context.Context, now time.Time) (store.OpsStats, error) {
	s := store.NewOpsStats()
	var running int64
	err := q.db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM outbox) + (SELECT count(*) FROM commands WHERE notify_at IS NOT NULL),
		LEAST((SELECT min(available_at) FROM outbox), (SELECT min(notify_at) FROM commands WHERE notify_at IS NOT NULL)),
		(SELECT count(*) FROM commands WHERE status = 'issued'),
		(SELECT min(available_at) FROM commands WHERE status = 'issued' AND available_at <= $1),
		(SELECT count(*) FROM commands WHERE status IN ('claimed', 'running') AND lease_expires_at < $1),
		(SELECT min(lease_expires_at) FROM commands WHERE status IN ('claimed', 'running') AND lease_expires_at < $1),
		(SELECT count(*) FROM executions WHERE status = 'running')`, ts(now)).
		Scan(&s.OutboxDepth, &s.OutboxOldest, &s.CommandsUnclaimed, &s.UnclaimedOldest,
			&s.ExpiredLeases, &s.ExpiredOldest, &running)
	if err != nil {
		return store.OpsStats{}, fmt.Errorf("pgdriver: ops stats: %w", err)
	}
	s.OutboxOldest, s.UnclaimedOldest, s.ExpiredOldest = utcPtr(s.OutboxOldest), utcPtr(s.UnclaimedOldest), utcPtr(s.ExpiredOldest)
	if s.OutboxOldest != nil && s.OutboxOldest.After(now) {
		s.OutboxOldest = nil // only deferred retries: nothing is due
	}
	s.Executions[api.ExecRunning] = running
	rows, err := q.db.Query(ctx, `SELECT CASE WHEN target = 'preagg' THEN '`+store.QueueLanePreAgg+`' ELSE lane END, count(*)
		FROM queries WHERE status = 'queued' GROUP BY 1`)
	if err != nil {
		return store.OpsStats{}, fmt.Errorf("pgdriver: ops stats: queued queries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var lane string
		var n int64
		if err := rows.Scan(&lane, &n); err != nil {
			return store.OpsStats{}, fmt.Errorf("pgdriver: ops stats: queued queries: %w", err)
		}
		s.QueriesQueued[lane] += n
	}
	if err := rows.Err(); err != nil {
		return store.OpsStats{}, fmt.Errorf("pgdriver: ops stats: queued queries: %w", err)
	}
	return s, nil
}
