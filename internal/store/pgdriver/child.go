package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// ExecutionChildOf implements store.Querier.
func (q querier) ExecutionChildOf(ctx context.Context, parentCommandID int64, task int) (store.Execution, error) {
	e, err := scanExecution(q.db.QueryRow(ctx, "SELECT "+execCols+" FROM executions WHERE parent_command_id = $1 AND parent_task = $2",
		parentCommandID, task))
	if err != nil {
		return store.Execution{}, notFound(err, fmt.Sprintf("child of command %d task %d", parentCommandID, task))
	}
	return e, nil
}

// CommandHold implements store.Tx: one conditional UPDATE, as a claim.
func (t *tx) CommandHold(ctx context.Context, eventID int64, holder string, until, now time.Time) (store.Command, error) {
	c, err := scanCommand(t.tx.QueryRow(ctx, `UPDATE commands AS c
		SET status = 'running', attempt = c.attempt + 1, worker_id = $2, lease_expires_at = $3, updated_at = $4,
		    claim_token_id = 0, notify_at = NULL
		WHERE c.event_id = $1 AND c.status = 'issued'
		RETURNING `+commandCols, eventID, holder, ts(until), ts(now)))
	if err != nil {
		return store.Command{}, t.missingOr(ctx, err, commandExistsSQL, eventID, fmt.Sprintf("hold command %d", eventID))
	}
	return c, nil
}
