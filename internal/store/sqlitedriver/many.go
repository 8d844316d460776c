package sqlitedriver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// SQLite has one writer and no network round trip: the set-based forms run
// the row methods' prepared statements once per row, inside the caller's
// transaction, in ascending id order. What they add is the per-row answer:
// a refused row is that row's outcome, not the call's error.

// outcome reports whether err is a row's own answer (refused, missing,
// another token's) rather than a failure of the database.
func outcome(err error) bool {
	return err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNotYours)
}

// CommandClaimMany implements store.ManyTx.
func (t *tx) CommandClaimMany(ctx context.Context, ps []store.ClaimParams) ([]store.ClaimOutcome, error) {
	out := make([]store.ClaimOutcome, len(ps))
	first, dup := store.ManyOrder(len(ps), func(i int) int64 { return ps[i].EventID })
	for _, i := range first {
		c, err := t.CommandClaim(ctx, ps[i])
		if !outcome(err) {
			return nil, err
		}
		out[i] = store.ClaimOutcome{Command: c, Err: err}
	}
	for i, d := range dup {
		if d {
			out[i].Err = fmt.Errorf("sqlitedriver: claim command %d: claimed earlier in the same call: %w", ps[i].EventID, store.ErrConflict)
		}
	}
	return out, nil
}

// CommandFinishMany implements store.ManyTx.
func (t *tx) CommandFinishMany(ctx context.Context, ps []store.FinishParams) ([]store.FinishOutcome, error) {
	out := make([]store.FinishOutcome, len(ps))
	first, dup := store.ManyOrder(len(ps), func(i int) int64 { return ps[i].EventID })
	for _, i := range first {
		p := ps[i]
		if p.Status != api.CmdCompleted && p.Status != api.CmdFailed {
			// The caller's mistake, this report's answer only.
			out[i].Err = fmt.Errorf("sqlitedriver: finish command %d: status %q is not %s or %s",
				p.EventID, p.Status, api.CmdCompleted, api.CmdFailed)
			continue
		}
		c, err := t.CommandFinish(ctx, p)
		if !outcome(err) {
			return nil, err
		}
		out[i] = store.FinishOutcome{Command: c, Err: err}
	}
	for i, d := range dup {
		if d {
			out[i].Err = fmt.Errorf("sqlitedriver: finish command %d (worker %s, attempt %d): reported earlier in the same call: %w",
				ps[i].EventID, ps[i].WorkerID, ps[i].Attempt, store.ErrConflict)
		}
	}
	return out, nil
}

// LockExecutions implements store.ManyTx. The writer lock is the lock: this
// reads each row (the prepared LockExecution statement).
func (t *tx) LockExecutions(ctx context.Context, ids []int64) (map[int64]store.Execution, error) {
	got := make(map[int64]store.Execution, len(ids))
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for _, id := range ids {
		e, err := t.LockExecution(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		got[id] = e
	}
	return got, nil
}
