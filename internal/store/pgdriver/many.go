package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// The set-based forms of CommandClaim and CommandFinish: one UPDATE … FROM
// unnest for all rows. The rows are locked first, in ascending event id
// order, by the FOR UPDATE sub-select (its sort runs before any row is
// locked, whatever join the planner picks), so two calls over overlapping
// sets never deadlock. The rows the UPDATE did not return are explained by
// one more statement, on that path only.
var (
	claimManySQL = `UPDATE commands AS c SET ` + claimSet("p.status", "p.worker_id", "p.lease", "p.now", "p.token") + `
		FROM (SELECT p.* FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::bigint[])
				AS p(event_id, worker_id, lease, now, status, token)
			JOIN commands AS l ON l.event_id = p.event_id
			ORDER BY p.event_id FOR UPDATE OF l) AS p
		WHERE c.event_id = p.event_id AND ` + claimable("p.now") + `
		RETURNING ` + commandCols
	commandsExistSQL = `SELECT event_id FROM commands WHERE event_id = ANY($1)`
	finishManySQL    = `UPDATE commands AS c SET ` + finishSet("p.status", "p.result::json", "p.error", "p.now") + `
		FROM (SELECT p.* FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
				AS p(event_id, worker_id, attempt, token, status, result, error, now)
			JOIN commands AS l ON l.event_id = p.event_id
			ORDER BY p.event_id FOR UPDATE OF l) AS p
		WHERE c.event_id = p.event_id AND ` + holderCond("p.worker_id", "p.attempt", "p.token") + `
		RETURNING ` + commandCols
	finishExplainSQL = `SELECT p.event_id, ` + otherToken("p.worker_id", "p.attempt", "p.token") + `
		FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[]) AS p(event_id, worker_id, attempt, token)
		JOIN commands AS c ON c.event_id = p.event_id`
	lockExecutionsSQL = "SELECT " + execCols + ", revision FROM executions WHERE execution_id = ANY($1) ORDER BY execution_id FOR UPDATE"
)

// each runs a query and scans every row with fn, sending what is queued in
// the same round trip (Query would flush the queue first).
func (p *pipe) each(ctx context.Context, fn func(pgx.Rows) error, sql string, args ...any) error {
	if p.closed {
		return errPipeClosed
	}
	br, err := p.send(ctx, &queued{sql: sql, args: args})
	if err != nil {
		_ = br.Close()
		return err
	}
	rows, err := br.Query()
	if err == nil {
		for rows.Next() {
			if err = fn(rows); err != nil {
				break
			}
		}
	}
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// commands scans RETURNING commandCols rows by event id.
func (t *tx) commands(ctx context.Context, n int, sql string, args ...any) (map[int64]store.Command, error) {
	got := make(map[int64]store.Command, n)
	err := t.tx.each(ctx, func(rows pgx.Rows) error {
		c, err := scanCommand(rows)
		got[c.EventID] = c
		return err
	}, sql, args...)
	return got, err
}

// CommandClaimMany implements store.ManyTx.
func (t *tx) CommandClaimMany(ctx context.Context, ps []store.ClaimParams) ([]store.ClaimOutcome, error) {
	out := make([]store.ClaimOutcome, len(ps))
	first, dup := store.ManyOrder(len(ps), func(i int) int64 { return ps[i].EventID })
	if len(first) == 0 {
		return out, nil
	}
	ids, workers, tokens := make([]int64, len(first)), make([]string, len(first)), make([]int64, len(first))
	leases, nows, statuses := make([]time.Time, len(first)), make([]time.Time, len(first)), make([]string, len(first))
	for k, i := range first {
		p := ps[i]
		now := tsOrNow(p.Now)
		ids[k], workers[k], tokens[k] = p.EventID, p.WorkerID, p.TokenID
		leases[k], nows[k], statuses[k] = ts(now.Add(p.LeaseTTL)), now, string(claimStatus(p))
	}
	won, err := t.commands(ctx, len(first), claimManySQL, ids, workers, leases, nows, statuses, tokens)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: claim %d commands: %w", len(first), err)
	}
	var exists map[int64]bool
	if len(won) < len(first) {
		exists = make(map[int64]bool, len(first)-len(won))
		err := t.tx.each(ctx, func(rows pgx.Rows) error {
			var id int64
			err := rows.Scan(&id)
			exists[id] = true
			return err
		}, commandsExistSQL, ids)
		if err != nil {
			return nil, fmt.Errorf("pgdriver: claim %d commands: explain the lost claims: %w", len(first), err)
		}
	}
	for i, p := range ps {
		what := fmt.Sprintf("claim command %d", p.EventID)
		c, ok := won[p.EventID]
		switch {
		case dup[i]:
			out[i].Err = fmt.Errorf("%s: claimed earlier in the same call: %w", what, store.ErrConflict)
		case ok:
			out[i].Command = c
		case exists[p.EventID]:
			out[i].Err = fmt.Errorf("%s: %w", what, store.ErrConflict)
		default:
			out[i].Err = fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
	}
	return out, nil
}

// CommandFinishMany implements store.ManyTx.
func (t *tx) CommandFinishMany(ctx context.Context, ps []store.FinishParams) ([]store.FinishOutcome, error) {
	out := make([]store.FinishOutcome, len(ps))
	first, dup := store.ManyOrder(len(ps), func(i int) int64 { return ps[i].EventID })
	n := len(first)
	ids, workers, attempts, tokens := make([]int64, 0, n), make([]string, 0, n), make([]int32, 0, n), make([]int64, 0, n)
	statuses, results, errs, nows := make([]string, 0, n), make([]*string, 0, n), make([]string, 0, n), make([]time.Time, 0, n)
	for _, i := range first {
		p := ps[i]
		if p.Status != api.CmdCompleted && p.Status != api.CmdFailed {
			// The caller's mistake, this report's answer only.
			out[i].Err = fmt.Errorf("pgdriver: finish command %d: status %q must be %s or %s",
				p.EventID, p.Status, api.CmdCompleted, api.CmdFailed)
			continue
		}
		var result *string
		if len(p.Result) > 0 {
			r := string(p.Result)
			result = &r
		}
		ids, workers, attempts, tokens = append(ids, p.EventID), append(workers, p.WorkerID), append(attempts, int32(p.Attempt)), append(tokens, p.TokenID)
		statuses, results, errs, nows = append(statuses, string(p.Status)), append(results, result), append(errs, p.Error), append(nows, tsOrNow(p.Now))
	}
	if len(ids) == 0 {
		return finishAnswers(ps, out, dup, nil, nil), nil
	}
	done, err := t.commands(ctx, len(ids), finishManySQL, ids, workers, attempts, tokens, statuses, results, errs, nows)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: finish %d commands: %w", len(ids), err)
	}
	var other map[int64]bool // the rows that exist; true: another token's claim
	if len(done) < len(ids) {
		other = make(map[int64]bool, len(ids)-len(done))
		err := t.tx.each(ctx, func(rows pgx.Rows) error {
			var id int64
			var o bool
			err := rows.Scan(&id, &o)
			other[id] = o
			return err
		}, finishExplainSQL, ids, workers, attempts, tokens)
		if err != nil {
			return nil, fmt.Errorf("pgdriver: finish %d commands: explain the refused reports: %w", len(ids), err)
		}
	}
	return finishAnswers(ps, out, dup, done, other), nil
}

// finishAnswers fills in each report's answer: finished, or why not,
// exactly as holderUpdate decides.
func finishAnswers(ps []store.FinishParams, out []store.FinishOutcome, dup []bool, done map[int64]store.Command, other map[int64]bool) []store.FinishOutcome {
	for i, p := range ps {
		if out[i].Err != nil {
			continue
		}
		what := fmt.Sprintf("finish command %d (worker %s, attempt %d)", p.EventID, p.WorkerID, p.Attempt)
		c, ok := done[p.EventID]
		o, exists := other[p.EventID]
		switch {
		case dup[i]:
			out[i].Err = fmt.Errorf("%s: reported earlier in the same call: %w", what, store.ErrConflict)
		case ok:
			out[i].Command = c
		case !exists:
			out[i].Err = fmt.Errorf("%s: %w", what, store.ErrNotFound)
		case o:
			out[i].Err = fmt.Errorf("%s: %w", what, store.ErrNotYours)
		default:
			out[i].Err = fmt.Errorf("%s: %w", what, store.ErrConflict)
		}
	}
	return out
}

// LockExecutions implements store.ManyTx.
func (t *tx) LockExecutions(ctx context.Context, ids []int64) (map[int64]store.Execution, error) {
	got := make(map[int64]store.Execution, len(ids))
	if len(ids) == 0 {
		return got, nil
	}
	err := t.tx.each(ctx, func(rows pgx.Rows) error {
		var rev int64
		e, err := scanExecution(withRevision{rows, &rev})
		e.Revision = rev
		got[e.ExecutionID] = e
		return err
	}, lockExecutionsSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: lock %d executions: %w", len(ids), err)
	}
	return got, nil
}
