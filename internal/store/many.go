package store

import (
	"cmp"
	"context"
	"slices"
)

// ClaimOutcome is the answer to one claim of CommandClaimMany: the claimed
// command, or why this claim lost (ErrConflict, ErrNotFound), never the
// batch's failure.
type ClaimOutcome struct {
	Command Command
	Err     error
}

// FinishOutcome is the answer to one report of CommandFinishMany.
type FinishOutcome struct {
	Command Command
	Err     error
}

// ManyTx holds the set-based forms of the hot conditional updates: one
// statement for many rows, each row with its own answer.
type ManyTx interface {
	// CommandClaimMany is CommandClaim for each of ps in one statement.
	// out[i] answers ps[i]. A later claim of an event id already in ps
	// gets ErrConflict. The error is for the statement as a whole (the
	// database failed), not for a claim that lost.
	CommandClaimMany(ctx context.Context, ps []ClaimParams) ([]ClaimOutcome, error)
	// CommandFinishMany is CommandFinish for each of ps in one statement,
	// with the same per-report errors (ErrConflict, ErrNotFound,
	// ErrNotYours) in out[i].
	CommandFinishMany(ctx context.Context, ps []FinishParams) ([]FinishOutcome, error)
	// LockExecutions is LockExecution for every id in one statement, in
	// ascending id order (so two callers never wait on each other in a
	// cycle). Absent ids are missing from the map.
	LockExecutions(ctx context.Context, ids []int64) (map[int64]Execution, error)
}

// ManyOrder is how drivers walk a ManyTx call: first holds the index of
// the first occurrence of each id, in ascending id order (the order rows
// are locked in, so two calls never wait on each other in a cycle); dup[i]
// is true when ps[i] repeats an id an earlier index already holds (that
// later one gets ErrConflict: the first wins the chance).
func ManyOrder(n int, id func(i int) int64) (first []int, dup []bool) {
	dup = make([]bool, n)
	seen := make(map[int64]struct{}, n)
	first = make([]int, 0, n)
	for i := range n {
		if _, ok := seen[id(i)]; ok {
			dup[i] = true
			continue
		}
		seen[id(i)] = struct{}{}
		first = append(first, i)
	}
	slices.SortFunc(first, func(a, b int) int { return cmp.Compare(id(a), id(b)) })
	return first, dup
}
