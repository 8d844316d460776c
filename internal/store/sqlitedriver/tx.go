package sqlitedriver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// tx is a store.Tx on the writer connection. It holds the write lock from
// Begin (BEGIN IMMEDIATE) to Commit or Rollback.
type tx struct {
	queries
}

var _ store.Tx = (*tx)(nil)

// Hot-path statements, prepared once on the writer (see Driver.prepare).
const (
	// sqlEventInsert, sqlCommandInsert, sqlOutboxInsert and
	// sqlExecutionInsert are built in set.go, with their set forms.

	// sqlCommandClaim is one conditional UPDATE: SQLite runs it under the
	// write lock, so of N concurrent claimers exactly one sees the row in a
	// claimable state.
	sqlCommandClaim = `UPDATE commands
		SET status = ?, attempt = attempt + 1, worker_id = ?, lease_expires_at = ?, updated_at = ?, claim_token_id = ?
		WHERE event_id = ?
		  AND (status = 'issued' OR (status IN ('claimed', 'running') AND lease_expires_at <= ?))
		RETURNING ` + commandCols
	// The holder statements match worker and attempt, and the token the
	// claim recorded (if any); an expired lease is still held until someone
	// re-claims (which bumps the attempt).
	holderWhere = `event_id = ? AND worker_id = ? AND attempt = ? AND status IN ('claimed', 'running')
		AND (claim_token_id = 0 OR claim_token_id = ?)`
	sqlCommandStart = `UPDATE commands SET status = 'running', lease_expires_at = ?, updated_at = ?
		WHERE ` + holderWhere + ` RETURNING ` + commandCols
	sqlCommandHeartbeat = `UPDATE commands SET lease_expires_at = ?, updated_at = ?
		WHERE ` + holderWhere + ` RETURNING ` + commandCols
	sqlCommandFinish = `UPDATE commands SET status = ?, result = ?, error = ?, updated_at = ?
		WHERE ` + holderWhere + ` RETURNING ` + commandCols
	// sqlCommandOtherToken tells a forgery (the holder's worker and attempt,
	// another token) from a lost lease, on the failure path only.
	sqlCommandOtherToken = `SELECT worker_id = ? AND attempt = ? AND status IN ('claimed', 'running')
		AND claim_token_id <> 0 AND claim_token_id <> ? FROM commands WHERE event_id = ?`
	sqlCommandRepublished = `UPDATE commands SET publishes = publishes + 1, published_at = ?1, notify_at = ?1, trace_parent = ?2
		WHERE event_id = ?3 RETURNING ` + commandCols
	sqlCommandExists = `SELECT 1 FROM commands WHERE event_id = ?`
	// The ids travel as one JSON array so the statement can be prepared
	// whatever their number.
	sqlOutboxDelete = `DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))`
)

// hotQueries are prepared once on the writer: every statement a submit,
// claim or report runs (re-parsing them took about a quarter of the
// writer's time on issue 5's bench). The savepoint statements are those of
// the group commit's store.CallerSavepoint.
var hotQueries = []string{
	sqlEventInsert, sqlCommandInsert, sqlCommandClaim, sqlCommandStart, sqlCommandHeartbeat,
	sqlCommandFinish, sqlCommandRepublished, sqlCommandExists, sqlCommandGet,
	sqlOutboxInsert, sqlOutboxDelete, sqlCommandNotified,
	sqlExecutionInsert, sqlExecutionGet, sqlExecutionLock, sqlExecutionTouch, sqlExecutionFinish, sqlCommandListByExecution, sqlLoopListByExecution,
	savepointSQL(verbSavepoint, store.CallerSavepoint), savepointSQL(verbRollbackTo, store.CallerSavepoint),
	savepointSQL(verbRelease, store.CallerSavepoint),
}

// readHotQueries are prepared on the readers (each connection prepares on
// first use): what every submit and status poll reads.
var readHotQueries = []string{sqlCatalogLatest, sqlCatalogVersion, sqlExecutionGet, sqlCommandGet}

const (
	sqlExecutionGet           = `SELECT ` + executionCols + ` FROM executions WHERE execution_id = ?`
	sqlExecutionLock          = `SELECT ` + executionCols + `, revision FROM executions WHERE execution_id = ?`
	sqlExecutionTouch         = `UPDATE executions SET revision = ? WHERE execution_id = ?`
	sqlExecutionFinish        = `UPDATE executions SET status = ?, result = ?, error = ?, ended_at = ? WHERE execution_id = ? AND status = 'running'`
	sqlCommandListByExecution = `SELECT ` + commandCols + ` FROM commands WHERE execution_id = ? ORDER BY event_id`
	sqlLoopListByExecution    = `SELECT ` + loopCols + ` FROM loops WHERE execution_id = ? ORDER BY loop_id`
	sqlCatalogLatest          = `SELECT ` + catalogCols + ` FROM catalog WHERE path = ? ORDER BY version DESC LIMIT 1`
	sqlCatalogVersion         = `SELECT ` + catalogCols + ` FROM catalog WHERE path = ? AND version = ?`

	verbSavepoint  = "SAVEPOINT"
	verbRollbackTo = "ROLLBACK TO SAVEPOINT"
	verbRelease    = "RELEASE SAVEPOINT"
)

// savepointSQL quotes name, so names starting with a digit are valid too.
func savepointSQL(verb, name string) string { return verb + ` "` + name + `"` }

// Commit implements store.Tx. database/sql commits without a context, and
// a local commit does not stall on a network; a caller whose context already
// ended gets its work rolled back, as on PostgreSQL.
func (t *tx) Commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		_ = t.tx.Rollback()
		return fmt.Errorf("sqlitedriver: commit: %w", err)
	}
	if err := t.tx.Commit(); err != nil {
		return fmt.Errorf("sqlitedriver: commit: %w", err)
	}
	return nil
}

// Rollback implements store.Tx. After Commit or Rollback it is a no-op, so
// callers can always defer it. It is local and never waits, so it ignores
// ctx: the transaction ends even when ctx has.
func (t *tx) Rollback(_ context.Context) error {
	if err := t.tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("sqlitedriver: rollback: %w", err)
	}
	return nil
}

// validName guards savepoint names, which are spliced into SQL.
func validName(name string) error {
	if name == "" {
		return errors.New("sqlitedriver: empty savepoint name")
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return fmt.Errorf("sqlitedriver: savepoint name %q: use only [a-z0-9_]", name)
		}
	}
	return nil
}

func (t *tx) savepointExec(ctx context.Context, verb, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if _, err := t.exec(ctx, savepointSQL(verb, name)); err != nil {
		return fmt.Errorf("sqlitedriver: %s %s: %w", verb, name, err)
	}
	return nil
}

func (t *tx) Savepoint(ctx context.Context, name string) error {
	return t.savepointExec(ctx, verbSavepoint, name)
}

func (t *tx) RollbackTo(ctx context.Context, name string) error {
	return t.savepointExec(ctx, verbRollbackTo, name)
}

func (t *tx) Release(ctx context.Context, name string) error {
	return t.savepointExec(ctx, verbRelease, name)
}

// insertErr reports a duplicate key as store.ErrConflict.
func insertErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("sqlitedriver: %s already exists (%v): %w", what, err, store.ErrConflict)
		}
	}
	return fmt.Errorf("sqlitedriver: insert %s: %w", what, err)
}

// nowIfZero stands in the current time for a caller that left t unset.
func nowIfZero(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

func (t *tx) CatalogInsert(ctx context.Context, catalogID int64, path, name, content string, now time.Time) (store.CatalogEntry, error) {
	// The write lock is held for the whole transaction, so reading the max
	// version and inserting the next one cannot interleave with another
	// writer.
	created := micros(now)
	var version int
	err := t.queryRow(ctx, `INSERT INTO catalog (catalog_id, path, version, name, content, created_at)
		SELECT ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ? FROM catalog WHERE path = ?
		RETURNING version`, catalogID, path, name, content, created, path).Scan(&version)
	if err != nil {
		return store.CatalogEntry{}, insertErr(err, "catalog entry %d (%s)", catalogID, path)
	}
	return store.CatalogEntry{
		CatalogID: catalogID, Path: path, Version: version, Name: name, Content: content,
		CreatedAt: fromMicros(created),
	}, nil
}

func (t *tx) ExecutionInsert(ctx context.Context, e store.Execution) error {
	if _, err := t.exec(ctx, sqlExecutionInsert, executionRow(e)...); err != nil {
		return insertErr(err, "execution %d", e.ExecutionID)
	}
	return nil
}

// LockExecution implements store.Tx. BEGIN IMMEDIATE already gave this
// transaction the database write lock, so reading the row is enough.
func (t *tx) LockExecution(ctx context.Context, id int64) (store.Execution, error) {
	var rev int64
	e, err := scanExecution(withRevision{t.queryRow(ctx, sqlExecutionLock, id), &rev})
	if err != nil {
		return e, notFound(err, "execution %d", id)
	}
	e.Revision = rev
	return e, nil
}

// withRevision scans the revision column that follows executionCols.
type withRevision struct {
	row scanner
	rev *int64
}

func (w withRevision) Scan(dest ...any) error { return w.row.Scan(append(dest, w.rev)...) }

func (t *tx) ExecutionTouch(ctx context.Context, id, revision int64) error {
	res, err := t.exec(ctx, sqlExecutionTouch, revision, id)
	if err != nil {
		return fmt.Errorf("sqlitedriver: touch execution %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("touch execution %d: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t *tx) ExecutionSetContext(ctx context.Context, id int64, raw json.RawMessage) error {
	res, err := t.exec(ctx, `UPDATE executions SET context = ? WHERE execution_id = ?`, jsonArg(raw), id)
	if err != nil {
		return fmt.Errorf("sqlitedriver: set context of execution %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitedriver: set context of execution %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlitedriver: set context of execution %d: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t *tx) ExecutionFinish(ctx context.Context, id int64, status api.ExecStatus, result json.RawMessage, errMsg string, now time.Time) error {
	switch status {
	case api.ExecCompleted, api.ExecFailed, api.ExecCancelled:
	default:
		return fmt.Errorf("sqlitedriver: finish execution %d: status %q is not terminal (want %s, %s or %s)",
			id, status, api.ExecCompleted, api.ExecFailed, api.ExecCancelled)
	}
	res, err := t.exec(ctx, sqlExecutionFinish, status, jsonArg(result), errMsg, micros(now), id)
	if err != nil {
		return fmt.Errorf("sqlitedriver: finish execution %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitedriver: finish execution %d: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	var one int
	err = t.queryRow(ctx, `SELECT 1 FROM executions WHERE execution_id = ?`, id).Scan(&one)
	if err != nil {
		return notFound(err, "finish execution %d", id)
	}
	return fmt.Errorf("sqlitedriver: finish execution %d: it is no longer running: %w", id, store.ErrConflict)
}

func (t *tx) EventInsert(ctx context.Context, e store.Event) error {
	if _, err := t.exec(ctx, sqlEventInsert, eventRow(e)...); err != nil {
		return insertErr(err, "event %d", e.EventID)
	}
	return nil
}

// CommandInsert: see commandKind (set.go) for the columns and defaults.
func (t *tx) CommandInsert(ctx context.Context, c store.Command) error {
	if _, err := t.exec(ctx, sqlCommandInsert, commandRow(c)...); err != nil {
		return insertErr(err, "command %d", c.EventID)
	}
	return nil
}

// commandUpdate runs a RETURNING update of one command. No row means the
// command is missing (ErrNotFound) or not in a state that allows op
// (ErrConflict).
func (t *tx) commandUpdate(ctx context.Context, op string, eventID int64, query string, args ...any) (store.Command, error) {
	c, err := scanCommand(t.queryRow(ctx, query, args...))
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return store.Command{}, fmt.Errorf("sqlitedriver: %s command %d: %w", op, eventID, err)
	}
	var one int
	if err := t.queryRow(ctx, sqlCommandExists, eventID).Scan(&one); err != nil {
		return store.Command{}, notFound(err, "%s command %d", op, eventID)
	}
	return store.Command{}, fmt.Errorf("sqlitedriver: %s command %d: not allowed in its current state: %w", op, eventID, store.ErrConflict)
}

func (t *tx) CommandClaim(ctx context.Context, p store.ClaimParams) (store.Command, error) {
	now := micros(p.Now)
	status := api.CmdClaimed
	if p.Start {
		status = api.CmdRunning
	}
	return t.commandUpdate(ctx, "claim", p.EventID, sqlCommandClaim,
		status, p.WorkerID, micros(p.Now.Add(p.LeaseTTL)), now, p.TokenID, p.EventID, now)
}

// holderUpdate is commandUpdate for the holder statements: a refusal is
// ErrNotYours when the caller named the holder's worker and attempt but
// the claim was made with another token.
func (t *tx) holderUpdate(ctx context.Context, op string, eventID int64, workerID string, attempt int, tokenID int64, query string, args ...any) (store.Command, error) {
	c, err := t.commandUpdate(ctx, op, eventID, query, append(args, eventID, workerID, attempt, tokenID)...)
	if !errors.Is(err, store.ErrConflict) {
		return c, err
	}
	var other bool
	if qerr := t.queryRow(ctx, sqlCommandOtherToken, workerID, attempt, tokenID, eventID).Scan(&other); qerr != nil {
		return store.Command{}, fmt.Errorf("sqlitedriver: %s command %d: %w", op, eventID, qerr)
	}
	if other {
		return store.Command{}, fmt.Errorf("sqlitedriver: %s command %d (worker %s, attempt %d): %w", op, eventID, workerID, attempt, store.ErrNotYours)
	}
	return c, err
}

func (t *tx) CommandStart(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (store.Command, error) {
	return t.holderUpdate(ctx, "start", eventID, workerID, attempt, tokenID, sqlCommandStart,
		micros(now.Add(ttl)), micros(now))
}

func (t *tx) CommandHeartbeat(ctx context.Context, eventID int64, workerID string, attempt int, tokenID int64, now time.Time, ttl time.Duration) (store.Command, error) {
	return t.holderUpdate(ctx, "heartbeat", eventID, workerID, attempt, tokenID, sqlCommandHeartbeat,
		micros(now.Add(ttl)), micros(now))
}

func (t *tx) CommandFinish(ctx context.Context, p store.FinishParams) (store.Command, error) {
	if p.Status != api.CmdCompleted && p.Status != api.CmdFailed {
		return store.Command{}, fmt.Errorf("sqlitedriver: finish command %d: status %q is not %s or %s",
			p.EventID, p.Status, api.CmdCompleted, api.CmdFailed)
	}
	return t.holderUpdate(ctx, "finish", p.EventID, p.WorkerID, p.Attempt, p.TokenID, sqlCommandFinish,
		p.Status, jsonArg(p.Result), p.Error, micros(p.Now))
}

func (t *tx) CommandCancelExecution(ctx context.Context, executionID int64, now time.Time) (int, error) {
	res, err := t.exec(ctx, `UPDATE commands SET status = 'cancelled', updated_at = ?, notify_at = NULL
		WHERE execution_id = ? AND `+liveStatus, micros(now), executionID)
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: cancel commands of execution %d: %w", executionID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: cancel commands of execution %d: %w", executionID, err)
	}
	return int(n), nil
}

func (t *tx) CommandMarkRepublished(ctx context.Context, eventID int64, now time.Time, traceParent string) (store.Command, error) {
	c, err := scanCommand(t.queryRow(ctx, sqlCommandRepublished, micros(now), traceParent, eventID))
	if err != nil {
		return c, notFound(err, "mark command %d republished", eventID)
	}
	return c, nil
}

func (t *tx) OutboxInsert(ctx context.Context, m store.OutboxMsg) error {
	if _, err := t.exec(ctx, sqlOutboxInsert, outboxRow(m)...); err != nil {
		return insertErr(err, "outbox message %d", m.ID)
	}
	return nil
}

func (t *tx) OutboxDelete(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("sqlitedriver: delete outbox messages: %w", err)
	}
	if _, err := t.exec(ctx, sqlOutboxDelete, string(list)); err != nil {
		return fmt.Errorf("sqlitedriver: delete %d outbox messages: %w", len(ids), err)
	}
	return nil
}

// LoopInsert ignores l.Status and l.Result: a loop always starts running
// and gets its result from LoopFinish.
func (t *tx) LoopInsert(ctx context.Context, l store.Loop) error {
	created := micros(nowIfZero(l.CreatedAt))
	updated := created
	if !l.UpdatedAt.IsZero() {
		updated = micros(l.UpdatedAt)
	}
	_, err := t.exec(ctx, `INSERT INTO loops (`+loopCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', NULL, ?, ?)`,
		l.LoopID, l.ExecutionID, l.Step, l.Total, l.Mode, l.MaxInFlight, jsonArg(l.Items), created, updated)
	if err != nil {
		return insertErr(err, "loop %d", l.LoopID)
	}
	return nil
}

func (t *tx) LoopFinish(ctx context.Context, loopID int64, status api.LoopStatus, result json.RawMessage, now time.Time) error {
	if status != api.LoopDone && status != api.LoopFailed {
		return fmt.Errorf("sqlitedriver: finish loop %d: status %q is not %s or %s", loopID, status, api.LoopDone, api.LoopFailed)
	}
	// Conditional on running and run under the write lock: of several
	// finishers exactly one changes the row.
	res, err := t.exec(ctx, `UPDATE loops SET status = ?, result = ?, updated_at = ? WHERE loop_id = ? AND status = 'running'`,
		status, jsonArg(result), micros(nowIfZero(now)), loopID)
	if err != nil {
		return fmt.Errorf("sqlitedriver: finish loop %d: %w", loopID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitedriver: finish loop %d: %w", loopID, err)
	}
	if n == 1 {
		return nil
	}
	var one int
	if err := t.queryRow(ctx, `SELECT 1 FROM loops WHERE loop_id = ?`, loopID).Scan(&one); err != nil {
		return notFound(err, "finish loop %d", loopID)
	}
	return fmt.Errorf("sqlitedriver: finish loop %d: it is no longer running: %w", loopID, store.ErrConflict)
}

// CredentialPut sets UpdatedAt to c.UpdatedAt (now when zero) and, for a new
// name, CreatedAt to c.CreatedAt (UpdatedAt when zero).
func (t *tx) CredentialPut(ctx context.Context, c store.Credential) error {
	updated := micros(nowIfZero(c.UpdatedAt))
	created := updated
	if !c.CreatedAt.IsZero() {
		created = micros(c.CreatedAt)
	}
	_, err := t.exec(ctx, `INSERT INTO credentials (`+credentialCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, description = excluded.description,
			data = excluded.data, updated_at = excluded.updated_at`,
		c.Name, c.Kind, c.Description, bytesArg(c.Data), created, updated)
	if err != nil {
		return fmt.Errorf("sqlitedriver: put credential %q: %w", c.Name, err)
	}
	return nil
}

func (t *tx) CredentialDelete(ctx context.Context, name string) error {
	res, err := t.exec(ctx, `DELETE FROM credentials WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("sqlitedriver: delete credential %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitedriver: delete credential %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlitedriver: delete credential %q: %w", name, store.ErrNotFound)
	}
	return nil
}

func (t *tx) BlobPut(ctx context.Context, id int64, data []byte, now time.Time) error {
	_, err := t.exec(ctx, `INSERT INTO blobs (id, data, created_at) VALUES (?, ?, ?)`, id, bytesArg(data), micros(nowIfZero(now)))
	if err != nil {
		return insertErr(err, "blob %d", id)
	}
	return nil
}

// bytesArg stores nil as an empty BLOB: the byte columns are NOT NULL, and
// an empty secret or blob is still a value.
func bytesArg(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
