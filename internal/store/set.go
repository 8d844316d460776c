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
	// CommandInsert, OutboxInsert and ExecutionTouch row by row. A failed
	// row fails the whole call; the transaction is then unusable until
	// RollbackTo, as after any failed statement.
	WriteSet(ctx context.Context, w *Writes) error
}
