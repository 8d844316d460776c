package store

import (
	"context"
	"time"
)

// The child slice's methods (issue 15): both write the set first.

func (t *setTx) ExecutionChildOf(ctx context.Context, parentCommandID int64, task int) (Execution, error) {
	if err := t.flush(ctx); err != nil {
		return Execution{}, err
	}
	return t.tx.ExecutionChildOf(ctx, parentCommandID, task)
}

func (t *setTx) CommandHold(ctx context.Context, eventID int64, holder string, until, now time.Time) (Command, error) {
	if err := t.flush(ctx); err != nil {
		return Command{}, err
	}
	return t.tx.CommandHold(ctx, eventID, holder, until, now)
}
