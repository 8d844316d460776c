package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

var _ store.Verifier = (*Driver)(nil)

// verifyQueries are the checks of store.Verifier. Every one returns
// (execution_id, command event id, detail, a time or NULL) and takes $1, the
// lowest execution id to check (ids are time-ordered, so --since is an
// index range), $2, the row limit, and for the notification check $3, the
// cutoff. The SQLite driver runs the same statements but for its outbox
// owner (no split_part) and times (integer microseconds).
var verifyQueries = map[string]string{
	store.CheckCompletedOnce: `
SELECT d.execution_id, COALESCE(c.event_id, 0), 'command ' || d.command_id || ' has ' || d.n || ' command.completed events', NULL::timestamptz
FROM (SELECT execution_id, command_id, count(*) AS n FROM events
      WHERE event_type = 'command.completed' AND execution_id >= $1
      GROUP BY execution_id, command_id HAVING count(*) > 1) d
LEFT JOIN commands c ON c.execution_id = d.execution_id AND c.command_id = d.command_id
ORDER BY d.execution_id, d.command_id LIMIT $2`,

	store.CheckTerminalEvent: `
SELECT x.execution_id, 0, CASE WHEN x.status = 'running'
        THEN 'execution is running but has ' || count(e.event_id) || ' terminal event(s)'
        ELSE 'execution is ' || x.status || ' but has no terminal event (playbook.completed, playbook.failed or execution.cancelled)' END,
       NULL::timestamptz
FROM executions x
LEFT JOIN events e ON e.execution_id = x.execution_id
     AND e.event_type IN ('playbook.completed', 'playbook.failed', 'execution.cancelled')
WHERE x.execution_id >= $1
GROUP BY x.execution_id, x.status
HAVING (x.status <> 'running' AND count(e.event_id) = 0) OR (x.status = 'running' AND count(e.event_id) > 0)
ORDER BY x.execution_id LIMIT $2`,

	store.CheckExecutionProjection: `
SELECT x.execution_id, 0, 'execution is ' || x.status || '; its last terminal event is ' || le.event_type || ' (' || t.n || ' terminal event(s))',
       NULL::timestamptz
FROM (SELECT execution_id, count(*) AS n, max(event_id) AS last_id FROM events
      WHERE event_type IN ('playbook.completed', 'playbook.failed', 'execution.cancelled') AND execution_id >= $1
      GROUP BY execution_id) t
JOIN executions x ON x.execution_id = t.execution_id
JOIN events le ON le.event_id = t.last_id
WHERE x.status <> 'running' AND (t.n > 1 OR le.event_type <> CASE x.status
      WHEN 'completed' THEN 'playbook.completed' WHEN 'failed' THEN 'playbook.failed'
      WHEN 'cancelled' THEN 'execution.cancelled' ELSE '' END)
ORDER BY x.execution_id LIMIT $2`,

	// A failure the step's policy continues past is recorded as
	// command.failed and projected as completed: completed takes either.
	store.CheckCommandProjection: `
SELECT v.execution_id, v.event_id, 'command ' || v.command_id || ' is ' || v.status || ' with ' || v.done || ' command.completed and ' || v.failed || ' command.failed',
       NULL::timestamptz
FROM (SELECT c.execution_id, c.event_id, c.command_id, c.status,
             count(CASE WHEN e.event_type = 'command.completed' THEN 1 END) AS done,
             count(CASE WHEN e.event_type = 'command.failed' THEN 1 END) AS failed
      FROM commands c
      LEFT JOIN events e ON e.execution_id = c.execution_id AND e.command_id = c.command_id
           AND e.event_type IN ('command.completed', 'command.failed')
      WHERE c.execution_id >= $1
      GROUP BY c.execution_id, c.event_id, c.command_id, c.status) v
WHERE (v.status = 'completed' AND v.done + v.failed <> 1)
   OR (v.status = 'failed' AND (v.failed <> 1 OR v.done > 0))
   OR (v.status NOT IN ('completed', 'failed') AND v.done + v.failed > 0)
ORDER BY v.execution_id, v.event_id LIMIT $2`,

	// An index's state is its latest command's (a retry follows a failure).
	store.CheckLoopProjection: `
SELECT v.execution_id, 0, 'loop ' || v.loop_id || ' (step ' || v.step || ') is ' || v.status || ' with ' || v.done || ' of ' || v.total
       || ' iterations completed, ' || v.live || ' in flight, ' || v.outside || ' outside [0, ' || v.total || ')', NULL::timestamptz
FROM (SELECT l.execution_id, l.loop_id, l.step, l.status, l.total, x.status AS exec_status,
        (SELECT count(*) FROM commands c WHERE c.execution_id = l.execution_id AND c.loop_id = l.loop_id
            AND c.status = 'completed' AND c.loop_index >= 0 AND c.loop_index < l.total
            AND c.event_id = (SELECT max(c2.event_id) FROM commands c2 WHERE c2.execution_id = c.execution_id
                              AND c2.loop_id = c.loop_id AND c2.loop_index = c.loop_index)) AS done,
        (SELECT count(*) FROM commands c WHERE c.execution_id = l.execution_id AND c.loop_id = l.loop_id
            AND c.status IN ('issued', 'claimed', 'running')) AS live,
        (SELECT count(*) FROM commands c WHERE c.execution_id = l.execution_id AND c.loop_id = l.loop_id
            AND (c.loop_index < 0 OR c.loop_index >= l.total)) AS outside
      FROM loops l JOIN executions x ON x.execution_id = l.execution_id
      WHERE l.execution_id >= $1) v
WHERE (v.status = 'done' AND (v.done <> v.total OR v.live > 0))
   OR (v.status = 'running' AND v.exec_status = 'running' AND v.total > 0 AND v.done = v.total)
   OR v.outside > 0
ORDER BY v.execution_id, v.loop_id LIMIT $2`,

	// A command's row (before migration 9) names its command by event_id;
	// a query's or build's names its owner in msg_id (uuid, or uuid#n).
	store.CheckOutboxOrphan: `
SELECT COALESCE(c.execution_id, 0), o.event_id, 'outbox row ' || o.id || ' (' || o.msg_id || ' on ' || o.subject || '): ' ||
       CASE WHEN o.event_id <> 0 THEN COALESCE('its command is ' || c.status, 'its command does not exist')
            WHEN q.status IS NOT NULL THEN 'its query is ' || q.status
            WHEN b.status IS NOT NULL THEN 'its pre-aggregate build is ' || b.status
            ELSE 'no command, query or build owns it' END, NULL::timestamptz
FROM outbox o
LEFT JOIN commands c ON o.event_id <> 0 AND c.event_id = o.event_id
LEFT JOIN queries q ON o.event_id = 0 AND q.query_uuid = split_part(o.msg_id, '#', 1)
LEFT JOIN preagg_builds b ON o.event_id = 0 AND b.build_uuid = split_part(o.msg_id, '#', 1)
WHERE $1::bigint >= 0 AND CASE WHEN o.event_id <> 0 THEN COALESCE(c.status, '') NOT IN ('issued', 'claimed', 'running')
      ELSE COALESCE(q.status, '') NOT IN ('pending', 'queued', 'executing') AND COALESCE(b.status, '') NOT IN ('queued', 'building') END
ORDER BY o.id LIMIT $2`,

	// Pending since before the cutoff: the relay is not publishing it
	// (NATS unreachable, or a row that fails every time and was parked).
	store.CheckNotification: `
SELECT * FROM (SELECT c.execution_id, c.event_id, 'command ' || c.command_id || ' (' || c.status || ') has had a notification pending since', c.notify_at
 FROM commands c JOIN executions x ON x.execution_id = c.execution_id
 WHERE c.notify_at IS NOT NULL AND c.notify_at < $3 AND c.execution_id >= $1
   AND c.status IN ('issued', 'claimed', 'running') AND x.status = 'running'
 ORDER BY c.notify_at, c.event_id LIMIT $2) pc
UNION ALL
SELECT * FROM (SELECT 0, o.event_id, 'outbox row ' || o.id || ' (' || o.msg_id || ' on ' || o.subject || ') has been due since', o.available_at
 FROM outbox o WHERE o.available_at < $3
 ORDER BY o.available_at, o.id LIMIT $2) po`,
}

// VerifyCheck implements store.Verifier.
func (d *Driver) VerifyCheck(ctx context.Context, check string, opts store.VerifyOptions) ([]store.Violation, error) {
	q, ok := verifyQueries[check]
	if !ok {
		return nil, fmt.Errorf("pgdriver: unknown verify check %q", check)
	}
	args := opts.CheckArgs(check, func(t time.Time) any { return t })
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: verify %s: %w", check, err)
	}
	defer rows.Close()
	var out []store.Violation
	for rows.Next() {
		v := store.Violation{Check: check}
		var at *time.Time
		if err := rows.Scan(&v.ExecutionID, &v.CommandID, &v.Detail, &at); err != nil {
			return nil, fmt.Errorf("pgdriver: verify %s: %w", check, err)
		}
		if at != nil {
			v.Detail += " " + at.UTC().Format(time.RFC3339)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgdriver: verify %s: %w", check, err)
	}
	return opts.Trim(out), nil
}

// VerifyCounts implements store.Verifier.
func (d *Driver) VerifyCounts(ctx context.Context, opts store.VerifyOptions) (map[string]int64, error) {
	var e, c, ev, l, o int64
	err := d.pool.QueryRow(ctx, store.VerifyCountsSQL, opts.MinExecution()).Scan(&e, &c, &ev, &l, &o)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: verify counts: %w", err)
	}
	return map[string]int64{"executions": e, "commands": c, "events": ev, "loops": l, "outbox": o}, nil
}
