package sqlitedriver

import (
	"context"
	"time"

	"github.com/millrace/millrace/internal/store"
)

const sqlCommandHold = `UPDATE commands
	SET status = 'running', attempt = attempt + 1, worker_id = ?, lease_expires_at = ?, updated_at = ?,
	    claim_token_id = 0, notify_at = NULL
	WHERE event_id = ? AND status = 'issued'
	RETURNING ` + commandCols

// ExecutionChildOf implements store.Querier.
func (q *queries) ExecutionChildOf(ctx context.Context, parentCommandID int64, task int) (store.Execution, error) {
	e, err := scanExecution(q.queryRow(ctx, `SELECT `+executionCols+` FROM executions WHERE parent_command_id = ? AND parent_task = ?`,
		parentCommandID, task))
	if err != nil {
		return e, notFound(err, "child of command %d task %d", parentCommandID, task)
	}
	return e, nil
}

// CommandHold implements store.Tx.
func (t *tx) CommandHold(ctx context.Context, eventID int64, holder string, until, now time.Time) (store.Command, error) {
	return t.commandUpdate(ctx, "hold", eventID, sqlCommandHold, holder, micros(until), micros(now), eventID)
}
