package store

import "context"

// Writes is the write-only work a group-committed batch collected from its
// callers: rows that need no answer. The batch sends it as one statement
// per kind (PostgreSQL: INSERT … SELECT FROM unnest; SQLite: multi-row
// INSERT), not one statement per row and caller. See Store.Do.
type Writes struct {
	Executions []Execution
	Events     []Event
	Commands   []Command
	Outbox     []OutboxMsg
	Touches    []Touch
}

// Touch is a deferred ExecutionTouch.
type Touch struct {
	ExecutionID int64
	Revision    int64
}

// LastTouches is ts with only the last touch of each execution, in the
// order of those last touches: a set UPDATE that met one execution twice
// would apply an arbitrary one of them. It returns ts itself when no
// execution repeats.
func LastTouches(ts []Touch) []Touch {
	if len(ts) < 2 {
		return ts
	}
	last := make(map[int64]int, len(ts))
	for i, t := range ts {
		last[t.ExecutionID] = i
	}
	if len(last) == len(ts) {
		return ts
	}
	out := make([]Touch, 0, len(last))
	for i, t := range ts {
		if last[t.ExecutionID] == i {
			out = append(out, t)
		}
	}
	return out
}

// Len is how many rows w holds.
func (w *Writes) Len() int {
	return len(w.Executions) + len(w.Events) + len(w.Commands) + len(w.Outbox) + len(w.Touches)
}

// Reset empties w, keeping its capacity.
func (w *Writes) Reset() {
	w.Executions, w.Events, w.Commands, w.Outbox, w.Touches = w.Executions[:0], w.Events[:0], w.Commands[:0], w.Outbox[:0], w.Touches[:0]
}

// SetTx writes a Writes set.
type SetTx interface {
	// WriteSet writes every row of w, one statement per non-empty kind,
	// with the same meaning (and errors) as ExecutionInsert, EventInsert,
	// CommandInsert, OutboxInsert and ExecutionTouch row by row (of
	// several touches of one execution the last wins). A failed row fails
	// the whole call; the transaction is then unusable until RollbackTo, as
	// after any failed statement. A driver may queue the statements as it
	// queues row-by-row inserts (see Tx.Savepoint): the error then comes
	// with a later call.
	WriteSet(ctx context.Context, w *Writes) error
}
