package pgdriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// tx implements store.Tx over a pipe (see pipeline.go).
type tx struct {
	querier
	tx *pipe
}

var _ store.Tx = (*tx)(nil)

// Commit implements store.Tx.
func (t *tx) Commit(ctx context.Context) error {
	if err := t.tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgdriver: commit: %w", err)
	}
	return nil
}

// Rollback is harmless after Commit or a previous Rollback, so callers can
// always defer it. If ctx ends before the server answers, pgx closes the
// connection, which aborts the transaction anyway.
func (t *tx) Rollback(ctx context.Context) error {
	err := t.tx.Rollback(ctx)
	if err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("pgdriver: rollback: %w", err)
	}
	return nil
}

// validSavepoint guards the names spliced into SAVEPOINT statements, which
// cannot take bind parameters.
func validSavepoint(name string) error {
	if name == "" {
		return errors.New("pgdriver: empty savepoint name")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("pgdriver: savepoint name %q must match [a-z0-9_]+", name)
		}
	}
	return nil
}

// Savepoint is queued: it travels with the caller's first statement that
// needs an answer.
func (t *tx) Savepoint(ctx context.Context, name string) error {
	if err := validSavepoint(name); err != nil {
		return err
	}
	t.tx.enqueue(nil, "SAVEPOINT "+name)
	return nil
}

// RollbackTo and Release send whatever is queued: the errors of the
// caller's queued inserts surface here at the latest, before the next
// caller's work starts.
func (t *tx) RollbackTo(ctx context.Context, name string) error {
	return t.savepointFlush(ctx, "ROLLBACK TO SAVEPOINT ", name)
}

func (t *tx) Release(ctx context.Context, name string) error {
	return t.savepointFlush(ctx, "RELEASE SAVEPOINT ", name)
}

func (t *tx) savepointFlush(ctx context.Context, stmt, name string) error {
	if err := validSavepoint(name); err != nil {
		return err
	}
	t.tx.enqueue(nil, stmt+name)
	return t.tx.flush(ctx)
}

// insertErr reports a duplicate key as store.ErrConflict so callers can tell
// "already there" from a broken database.
func insertErr(err error, what string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return fmt.Errorf("%s already exists (%s): %w", what, pgErr.ConstraintName, store.ErrConflict)
	}
	return fmt.Errorf("pgdriver: insert %s: %w", what, err)
}

// insertWrap is insertErr for a queued insert, whose error arrives later.
func insertWrap(what string) func(error) error {
	return func(err error) error { return insertErr(err, what) }
}

// missingOr decides why a conditional UPDATE matched nothing: the row is
// absent (ErrNotFound) or in the wrong state (ErrConflict). It runs only on
// the failure path, keeping the success path a single round trip.
func (t *tx) missingOr(ctx context.Context, err error, existsSQL string, id int64, what string) error {
	if !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	var exists bool
	if err := t.tx.QueryRow(ctx, existsSQL, id).Scan(&exists); err != nil {
		return fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	if !exists {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, store.ErrConflict)
}

const (
	commandExistsSQL   = "SELECT EXISTS (SELECT 1 FROM commands WHERE event_id = $1)"
	executionExistsSQL = "SELECT EXISTS (SELECT 1 FROM executions WHERE execution_id = $1)"
	loopExistsSQL      = "SELECT EXISTS (SELECT 1 FROM loops WHERE loop_id = $1)"
)

func (t *tx) CatalogInsert(ctx context.Context, catalogID int64, path, name, content string, now time.Time) (store.CatalogEntry, error) {
	// The lock must be taken in its own statement: a READ COMMITTED
	// statement's snapshot predates any lock it waits for, so MAX(version)
	// in the same statement could miss a version committed meanwhile.
	if _, err := t.tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '') || '/' || $2))",
		lockClassCatalog, path); err != nil {
		return store.CatalogEntry{}, fmt.Errorf("pgdriver: lock catalog path %s: %w", path, err)
	}
	c, err := scanCatalog(t.tx.QueryRow(ctx, `INSERT INTO catalog (catalog_id, path, version, name, content, created_at)
		SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5 FROM catalog WHERE path = $2
		RETURNING `+catalogCols, catalogID, path, name, content, tsOrNow(now)))
	if err != nil {
		return store.CatalogEntry{}, insertErr(err, fmt.Sprintf("catalog entry %d for %s", catalogID, path))
	}
	return c, nil
}

func (t *tx) ExecutionInsert(ctx context.Context, e store.Execution) error {
	t.tx.enqueue(insertWrap(fmt.Sprintf("execution %d", e.ExecutionID)), sqlExecutionInsert, executionRow(e)...)
	return nil
}

func (t *tx) LockExecution(ctx context.Context, id int64) (store.Execution, error) {
	var rev int64
	e, err := scanExecution(withRevision{t.tx.QueryRow(ctx, "SELECT "+execCols+", revision FROM executions WHERE execution_id = $1 FOR UPDATE", id), &rev})
	if err != nil {
		return store.Execution{}, notFound(err, fmt.Sprintf("lock execution %d", id))
	}
	e.Revision = rev
	return e, nil
}

// withRevision scans the revision column that follows execCols.
type withRevision struct {
	row pgx.Row
	rev *int64
}

func (w withRevision) Scan(dest ...any) error { return w.row.Scan(append(dest, w.rev)...) }

// ExecutionTouch is queued: the caller holds the row lock, so the row
// exists and the update cannot wait.
func (t *tx) ExecutionTouch(ctx context.Context, id, revision int64) error {
	t.tx.enqueue(func(err error) error { return fmt.Errorf("pgdriver: touch execution %d: %w", id, err) },
		sqlExecutionTouch, id, revision)
	return nil
}

func (t *tx) ExecutionSetContext(ctx context.Context, id int64, raw json.RawMessage) error {
	tag, err := t.tx.Exec(ctx, "UPDATE executions SET context = $2 WHERE execution_id = $1", id, jsonArg(raw))
	if err != nil {
		return fmt.Errorf("pgdriver: set context of execution %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set context of execution %d: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t *tx) ExecutionFinish(ctx context.Context, id int64, status api.ExecStatus, result json.RawMessage, errMsg string, now time.Time) error {
	switch status {
	case api.ExecCompleted, api.ExecFailed, api.ExecCancelled:
	default:
		return fmt.Errorf("pgdriver: finish execution %d: status %q is not terminal (want completed, failed or cancelled)", id, status)
	}
	var got int64
	err := t.tx.QueryRow(ctx, `UPDATE executions SET status = $2, result = $3, error = $4, ended_at = $5
		WHERE execution_id = $1 AND status = 'running' RETURNING execution_id`,
		id, status, jsonArg(result), errMsg, tsOrNow(now)).Scan(&got)
	if err != nil {
		return t.missingOr(ctx, err, executionExistsSQL, id, fmt.Sprintf("finish execution %d", id))
	}
	return nil
}

func (t *tx) EventInsert(ctx context.Context, e store.Event) error {
	t.tx.enqueue(insertWrap(fmt.Sprintf("event %d", e.EventID)), sqlEventInsert, eventRow(e)...)
	return nil
}

// CommandInsert: see commandKind (set.go) for the columns and defaults.
func (t *tx) CommandInsert(ctx context.Context, c store.Command) error {
	t.tx.enqueue(insertWrap(fmt.Sprintf("command %d", c.EventID)), sqlCommandInsert, commandRow(c)...)
	return nil
}

func (t *tx) CommandClaim(ctx context.Context, p store.ClaimParams) (store.Command, error) {
	now := tsOrNow(p.Now)
	// One conditional UPDATE: under concurrency the row lock plus the
	// re-evaluated WHERE clause lets exactly one claimer through.
	c, err := scanCommand(t.tx.QueryRow(ctx, `UPDATE commands AS c
		SET `+claimSet("$5", "$2", "$3", "$4", "$6")+`
		WHERE c.event_id = $1 AND `+claimable("$4")+`
		RETURNING `+commandCols,
		p.EventID, p.WorkerID, ts(now.Add(p.LeaseTTL)), now, claimStatus(p), p.TokenID))
	if err != nil {
		return store.Command{}, t.missingOr(ctx, err, commandExistsSQL, p.EventID, fmt.Sprintf("claim command %d", p.EventID))
	}
	return c, nil
}

// claimSet and claimable are CommandClaim's SET and condition, with the
// values' sources as arguments so that CommandClaimMany shares them.
func claimSet(status, worker, lease, now, token string) string {
	return "status = " + status + ", attempt = c.attempt + 1, worker_id = " + worker + ", lease_expires_at = " + lease +
		", updated_at = " + now + ", claim_token_id = " + token
}

func claimable(now string) string {
	return "(c.status = 'issued' OR (c.status IN ('claimed', 'running') AND c.lease_expires_at <= " + now + "))"
}

// holderCond is the holder statements' condition; otherToken tells, on the
// failure path, a forgery (the holder's worker and attempt with another
// token) from a lost lease.
func holderCond(worker, attempt, token string) string {
	return "c.worker_id = " + worker + " AND c.attempt = " + attempt + " AND c.status IN ('claimed', 'running')" +
		" AND (c.claim_token_id = 0 OR c.claim_token_id = " + token + ")"
}

func finishSet(status, result, errText, now string) string {
	return "status = " + status + ", result = " + result + ", error = " + errText + ", updated_at = " + now
}

func otherToken(worker, attempt, token string) string {
	return "c.worker_id = " + worker + " AND c.attempt = " + attempt + " AND c.status IN ('claimed', 'running')" +
		" AND c.claim_token_id <> 0 AND c.claim_token_id <> " + token
}

func claimStatus(p store.ClaimParams) api.CommandStatus {
	if p.Start {
		return api.CmdRunning
	}
	return api.CmdClaimed
}

// holderUpdate runs an UPDATE allowed only for the current holder of attempt
// while the command is claimed or running, and only with the token the
// claim recorded (when it recorded one). Its set clause's parameters start
// at $5.
func (t *tx) holderUpdate(ctx context.Context, set string, eventID int64, workerID string, attempt int, tokenID int64, what string, args ...any) (store.Command, error) {
	args = append([]any{eventID, workerID, attempt, tokenID}, args...)
	c, err := scanCommand(t.tx.QueryRow(ctx, "UPDATE commands AS c SET "+set+`
		WHERE c.event_id = $1 AND `+holderCond("$2", "$3", "$4")+`
		RETURNING `+commandCols, args...))
	if err == nil {
		return c, nil
	}
	what = fmt.Sprintf("%s command %d (worker %s, attempt %d)", what, eventID, workerID, attempt)
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.Command{}, fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	// Failure path only: the holder's own worker and attempt with another
	// token is a forgery, not a lost lease.
	var other bool
	err = t.tx.QueryRow(ctx, `SELECT `+otherToken("$2", "$3", "$4")+`
		FROM commands AS c WHERE c.event_id = $1`, eventID, workerID, attempt, tokenID).Scan(&other)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.Command{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	case err != nil:
		return store.Command{}, fmt.Errorf("pgdriver: %s: %w", what, err)
	case other:
		return store.Command{}, fmt.Errorf("%s: %w", what, store.ErrNotYours)
	}
	return store.Command{}, fmt.Errorf("%s: %w", what, store.ErrConflict)
}

func (t *tx) CommandStart(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (store.Command, error) {
	now = tsOrNow(now)
	return t.holderUpdate(ctx, "status = 'running', lease_expires_at = $5, updated_at = $6",
		eventID, workerID, attempt, tokenID, "start", ts(now.Add(ttl)), now)
}

func (t *tx) CommandHeartbeat(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (store.Command, error) {
	now = tsOrNow(now)
	return t.holderUpdate(ctx, "lease_expires_at = $5, updated_at = $6",
		eventID, workerID, attempt, tokenID, "heartbeat", ts(now.Add(ttl)), now)
}

func (t *tx) CommandFinish(ctx context.Context, p store.FinishParams) (store.Command, error) {
	if p.Status != api.CmdCompleted && p.Status != api.CmdFailed {
		return store.Command{}, fmt.Errorf("pgdriver: finish command %d: status %q must be %s or %s",
			p.EventID, p.Status, api.CmdCompleted, api.CmdFailed)
	}
	return t.holderUpdate(ctx, finishSet("$5", "$6", "$7", "$8"),
		p.EventID, p.WorkerID, p.Attempt, p.TokenID, "finish", p.Status, jsonArg(p.Result), p.Error, tsOrNow(p.Now))
}

func (t *tx) CommandCancelExecution(ctx context.Context, executionID int64, now time.Time) (int, error) {
	tag, err := t.tx.Exec(ctx, `UPDATE commands SET status = 'cancelled', updated_at = $2, notify_at = NULL
		WHERE execution_id = $1 AND status IN `+liveStatuses, executionID, tsOrNow(now))
	if err != nil {
		return 0, fmt.Errorf("pgdriver: cancel commands of execution %d: %w", executionID, err)
	}
	return int(tag.RowsAffected()), nil
}

func (t *tx) CommandMarkRepublished(ctx context.Context, eventID int64, now time.Time, traceParent string) (store.Command, error) {
	c, err := scanCommand(t.tx.QueryRow(ctx, `UPDATE commands AS c
		SET publishes = c.publishes + 1, published_at = $2, notify_at = $2, trace_parent = $3
		WHERE c.event_id = $1 RETURNING `+commandCols, eventID, tsOrNow(now), traceParent))
	if err != nil {
		return store.Command{}, notFound(err, fmt.Sprintf("mark command %d republished", eventID))
	}
	return c, nil
}

func (t *tx) OutboxInsert(ctx context.Context, msg store.OutboxMsg) error {
	t.tx.enqueue(insertWrap(fmt.Sprintf("outbox message %d", msg.ID)), sqlOutboxInsert, outboxRow(msg)...)
	return nil
}

func (t *tx) OutboxDelete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := t.tx.Exec(ctx, "DELETE FROM outbox WHERE id = ANY($1)", ids); err != nil {
		return fmt.Errorf("pgdriver: delete %d outbox messages: %w", len(ids), err)
	}
	return nil
}

// LoopInsert ignores l.Status and l.Result: a loop always starts running
// and gets its result from LoopFinish.
func (t *tx) LoopInsert(ctx context.Context, l store.Loop) error {
	created := tsOrNow(l.CreatedAt)
	updated := created
	if !l.UpdatedAt.IsZero() {
		updated = ts(l.UpdatedAt)
	}
	_, err := t.tx.Exec(ctx, "INSERT INTO loops ("+loopCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', NULL, $8, $9)`,
		l.LoopID, l.ExecutionID, l.Step, l.Total, l.Mode, l.MaxInFlight, jsonArg(l.Items), created, updated)
	if err != nil {
		return insertErr(err, fmt.Sprintf("loop %d", l.LoopID))
	}
	return nil
}

func (t *tx) LoopFinish(ctx context.Context, loopID int64, status api.LoopStatus, result json.RawMessage, now time.Time) error {
	if status != api.LoopDone && status != api.LoopFailed {
		return fmt.Errorf("pgdriver: finish loop %d: status %q must be %s or %s", loopID, status, api.LoopDone, api.LoopFailed)
	}
	// Conditional on running: of several concurrent finishers the row lock
	// and the re-checked WHERE clause let exactly one through.
	var got int64
	err := t.tx.QueryRow(ctx, `UPDATE loops SET status = $2, result = $3, updated_at = $4
		WHERE loop_id = $1 AND status = 'running' RETURNING loop_id`,
		loopID, status, jsonArg(result), tsOrNow(now)).Scan(&got)
	if err != nil {
		return t.missingOr(ctx, err, loopExistsSQL, loopID, fmt.Sprintf("finish loop %d", loopID))
	}
	return nil
}

// CredentialPut sets UpdatedAt to c.UpdatedAt (now when zero) and, for a new
// name, CreatedAt to c.CreatedAt (UpdatedAt when zero).
func (t *tx) CredentialPut(ctx context.Context, c store.Credential) error {
	updated := tsOrNow(c.UpdatedAt)
	created := updated
	if !c.CreatedAt.IsZero() {
		created = ts(c.CreatedAt)
	}
	_, err := t.tx.Exec(ctx, "INSERT INTO credentials ("+credentialCols+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, description = excluded.description,
			data = excluded.data, updated_at = excluded.updated_at`,
		c.Name, c.Kind, c.Description, bytesArg(c.Data), created, updated)
	if err != nil {
		return fmt.Errorf("pgdriver: put credential %q: %w", c.Name, err)
	}
	return nil
}

func (t *tx) CredentialDelete(ctx context.Context, name string) error {
	tag, err := t.tx.Exec(ctx, "DELETE FROM credentials WHERE name = $1", name)
	if err != nil {
		return fmt.Errorf("pgdriver: delete credential %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete credential %q: %w", name, store.ErrNotFound)
	}
	return nil
}

func (t *tx) BlobPut(ctx context.Context, id int64, data []byte, now time.Time) error {
	_, err := t.tx.Exec(ctx, "INSERT INTO blobs (id, data, created_at) VALUES ($1, $2, $3)", id, bytesArg(data), tsOrNow(now))
	if err != nil {
		return insertErr(err, fmt.Sprintf("blob %d", id))
	}
	return nil
}
