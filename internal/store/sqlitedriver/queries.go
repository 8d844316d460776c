package sqlitedriver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// queries implements store.Querier on one transaction: a write transaction
// (embedded in tx) or a Driver.Read snapshot.
type queries struct {
	tx *sql.Tx
	// prepared holds the prepared statements of the writer or the readers
	// (nil before the schema exists); bound caches them rebound to tx.
	prepared *map[string]*sql.Stmt
	mu       sync.Mutex
	bound    map[*sql.Stmt]*sql.Stmt
}

var _ store.Querier = (*queries)(nil)

// stmt returns the prepared form of query bound to this transaction, or nil
// when query is not prepared.
func (q *queries) stmt(ctx context.Context, query string) *sql.Stmt {
	if q.prepared == nil {
		return nil
	}
	ps := (*q.prepared)[query]
	if ps == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.bound[ps]; s != nil {
		return s
	}
	if q.bound == nil {
		q.bound = make(map[*sql.Stmt]*sql.Stmt)
	}
	// The writer has a single connection, so this reuses the statement
	// already prepared on it instead of preparing again.
	s := q.tx.StmtContext(ctx, ps)
	q.bound[ps] = s
	return s
}

func (q *queries) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := q.stmt(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return q.tx.ExecContext(ctx, query, args...)
}

func (q *queries) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := q.stmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return q.tx.QueryContext(ctx, query, args...)
}

func (q *queries) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if s := q.stmt(ctx, query); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return q.tx.QueryRowContext(ctx, query, args...)
}

// --- encoding ---------------------------------------------------------------

// micros stores t as unix microseconds, truncating (not rounding) as the
// contract requires.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func microsPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return micros(*t)
}

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

// jsonArg stores a JSON document as TEXT, byte for byte; empty means NULL.
func jsonArg(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return string(raw)
}

// fromJSON turns a scanned TEXT column back into a document; NULL is nil.
func fromJSON(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return json.RawMessage(b)
}

type scanner interface{ Scan(dest ...any) error }

// notFound maps sql.ErrNoRows to store.ErrNotFound and wraps other errors.
func notFound(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlitedriver: %s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("sqlitedriver: %s: %w", what, err)
}

// --- catalog ----------------------------------------------------------------

const catalogCols = `catalog_id, path, version, name, content, created_at`

func scanCatalog(s scanner) (store.CatalogEntry, error) {
	var e store.CatalogEntry
	var created int64
	if err := s.Scan(&e.CatalogID, &e.Path, &e.Version, &e.Name, &e.Content, &created); err != nil {
		return store.CatalogEntry{}, err
	}
	e.CreatedAt = fromMicros(created)
	return e, nil
}

func (q *queries) CatalogGet(ctx context.Context, path string, version int) (store.CatalogEntry, error) {
	var row *sql.Row
	if version == 0 {
		row = q.queryRow(ctx, sqlCatalogLatest, path)
	} else {
		row = q.queryRow(ctx, sqlCatalogVersion, path, version)
	}
	e, err := scanCatalog(row)
	if err != nil {
		return e, notFound(err, "catalog %s version %d", path, version)
	}
	return e, nil
}

func (q *queries) CatalogGetByID(ctx context.Context, catalogID int64) (store.CatalogEntry, error) {
	e, err := scanCatalog(q.queryRow(ctx, `SELECT `+catalogCols+` FROM catalog WHERE catalog_id = ?`, catalogID))
	if err != nil {
		return e, notFound(err, "catalog entry %d", catalogID)
	}
	return e, nil
}

func (q *queries) CatalogList(ctx context.Context) ([]store.CatalogEntry, error) {
	// SQLite fills bare columns of a MAX() aggregate from the row holding
	// the maximum, so this walks the (path, version) index once.
	rows, err := q.query(ctx, `SELECT catalog_id, path, MAX(version), name, '', created_at
		FROM catalog GROUP BY path ORDER BY path`)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list catalog: %w", err)
	}
	return collect(rows, scanCatalog, "list catalog")
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error), what string) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitedriver: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	return out, nil
}

// --- executions -------------------------------------------------------------

const executionCols = `execution_id, catalog_id, path, version, status, workload, started_at, ended_at, result, error,
	parent_execution_id, context, depth, parent_command_id, parent_task, parent_attempt`

func scanExecution(s scanner) (store.Execution, error) {
	var e store.Execution
	var workload, result, context []byte
	var started int64
	var ended sql.NullInt64
	err := s.Scan(&e.ExecutionID, &e.CatalogID, &e.Path, &e.Version, &e.Status, &workload, &started, &ended, &result, &e.Error,
		&e.ParentExecutionID, &context, &e.Depth, &e.ParentCommandID, &e.ParentTask, &e.ParentAttempt)
	if err != nil {
		return store.Execution{}, err
	}
	e.Workload, e.Result, e.Context = fromJSON(workload), fromJSON(result), fromJSON(context)
	e.StartedAt, e.EndedAt = fromMicros(started), fromNullMicros(ended)
	return e, nil
}

func (q *queries) ExecutionGet(ctx context.Context, id int64) (store.Execution, error) {
	e, err := scanExecution(q.queryRow(ctx, sqlExecutionGet, id))
	if err != nil {
		return e, notFound(err, "execution %d", id)
	}
	return e, nil
}

func (q *queries) ExecutionList(ctx context.Context, f store.ExecutionFilter, offset, limit int) ([]store.Execution, int64, error) {
	where, args := " WHERE 1=1", []any{}
	if f.Status != "" {
		where += " AND status = ?"
		args = append(args, string(f.Status))
	}
	switch {
	case f.PathPrefix && f.Path != "":
		// substr, not LIKE: LIKE ignores ASCII case in SQLite and reads % and _.
		where += " AND substr(path, 1, length(?)) = ?"
		args = append(args, f.Path, f.Path)
	case f.Path != "":
		where += " AND path = ?"
		args = append(args, f.Path)
	}
	var total int64
	if err := q.queryRow(ctx, `SELECT count(*) FROM executions`+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("sqlitedriver: count executions: %w", err)
	}
	if limit <= 0 {
		return nil, total, nil
	}
	rows, err := q.query(ctx, `SELECT `+executionCols+` FROM executions`+where+` ORDER BY execution_id DESC LIMIT ? OFFSET ?`,
		append(args, limit, max(offset, 0))...)
	if err != nil {
		return nil, 0, fmt.Errorf("sqlitedriver: list executions: %w", err)
	}
	list, err := collect(rows, scanExecution, "list executions")
	return list, total, err
}

// --- events -----------------------------------------------------------------

const eventCols = `event_id, execution_id, event_type, step, command_id, status, result, error, worker_id, attempt, created_at`

func scanEvent(s scanner) (store.Event, error) {
	var e store.Event
	var result []byte
	var created int64
	err := s.Scan(&e.EventID, &e.ExecutionID, &e.EventType, &e.Step, &e.CommandID, &e.Status, &result, &e.Error, &e.WorkerID, &e.Attempt, &created)
	if err != nil {
		return store.Event{}, err
	}
	e.Result, e.CreatedAt = fromJSON(result), fromMicros(created)
	return e, nil
}

func (q *queries) EventList(ctx context.Context, executionID int64) ([]store.Event, error) {
	rows, err := q.query(ctx, `SELECT `+eventCols+` FROM events WHERE execution_id = ? ORDER BY event_id`, executionID)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list events of execution %d: %w", executionID, err)
	}
	return collect(rows, scanEvent, "list events")
}

func (q *queries) EventListOfType(ctx context.Context, executionID int64, eventType string) ([]store.Event, error) {
	rows, err := q.query(ctx, `SELECT `+eventCols+` FROM events WHERE execution_id = ? AND event_type = ? ORDER BY event_id`, executionID, eventType)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list %s events of execution %d: %w", eventType, executionID, err)
	}
	return collect(rows, scanEvent, "list events")
}

func (q *queries) EventsAfter(ctx context.Context, executionID, afterID int64, types []string, limit int) ([]store.Event, error) {
	sql, args := `SELECT `+eventCols+` FROM events WHERE event_id > ?`, []any{afterID}
	if executionID != 0 {
		sql += ` AND execution_id = ?`
		args = append(args, executionID)
	}
	if len(types) > 0 {
		sql += ` AND event_type IN (?` + strings.Repeat(`, ?`, len(types)-1) + `)`
		for _, t := range types {
			args = append(args, t)
		}
	}
	sql += ` ORDER BY event_id LIMIT ?`
	args = append(args, limit)
	rows, err := q.query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list events after %d: %w", afterID, err)
	}
	return collect(rows, scanEvent, "list events")
}

// --- commands ---------------------------------------------------------------

const commandCols = `event_id, execution_id, command_id, step, tool, input, status, attempt, worker_id,
	lease_expires_at, result, error, publishes, published_at, available_at, loop_id, loop_index, retry, created_at, updated_at,
	claim_token_id, pool`

// liveStatus is the predicate of commands_live_idx, repeated verbatim so the
// planner can use that partial index.
const liveStatus = `status IN ('issued', 'claimed', 'running')`

func scanCommand(s scanner) (store.Command, error) {
	var c store.Command
	var tool, input, result []byte
	var lease sql.NullInt64
	var published, available, created, updated int64
	err := s.Scan(&c.EventID, &c.ExecutionID, &c.CommandID, &c.Step, &tool, &input, &c.Status, &c.Attempt, &c.WorkerID,
		&lease, &result, &c.Error, &c.Publishes, &published, &available, &c.LoopID, &c.LoopIndex, &c.Retry, &created, &updated,
		&c.ClaimTokenID, &c.Pool)
	if err != nil {
		return store.Command{}, err
	}
	c.Tool, c.Input, c.Result = fromJSON(tool), fromJSON(input), fromJSON(result)
	c.LeaseExpires = fromNullMicros(lease)
	c.PublishedAt, c.AvailableAt = fromMicros(published), fromMicros(available)
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	return c, nil
}

const sqlCommandGet = `SELECT ` + commandCols + ` FROM commands WHERE event_id = ?`

func (q *queries) CommandGet(ctx context.Context, eventID int64) (store.Command, error) {
	c, err := scanCommand(q.queryRow(ctx, sqlCommandGet, eventID))
	if err != nil {
		return c, notFound(err, "command %d", eventID)
	}
	return c, nil
}

func (q *queries) CommandListByExecution(ctx context.Context, executionID int64) ([]store.Command, error) {
	rows, err := q.query(ctx, sqlCommandListByExecution, executionID)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list commands of execution %d: %w", executionID, err)
	}
	return collect(rows, scanCommand, "list commands")
}

func (q *queries) CommandsDue(ctx context.Context, now, unclaimedBefore time.Time, limit int) ([]store.Command, error) {
	if limit <= 0 {
		return nil, nil
	}
	// An expired lease re-notified after it expired waits until that
	// notification aged past unclaimedBefore; otherwise such commands would
	// come back on every pass and, filling the limit, starve the rest.
	rows, err := q.query(ctx, `SELECT `+commandCols+` FROM commands c
		WHERE `+liveStatus+`
		  AND ((status = 'issued' AND published_at <= ?1)
		    OR (status IN ('claimed', 'running') AND lease_expires_at <= ?2
		        AND (published_at < lease_expires_at OR published_at <= ?1)))
		  AND notify_at IS NULL
		  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = c.event_id)
		  AND EXISTS (SELECT 1 FROM executions e WHERE e.execution_id = c.execution_id AND e.status = 'running')
		ORDER BY event_id
		LIMIT ?3`, micros(unclaimedBefore), micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list due commands: %w", err)
	}
	return collect(rows, scanCommand, "list due commands")
}

// --- outbox and stats -------------------------------------------------------

func scanOutbox(s scanner) (store.OutboxMsg, error) {
	var m store.OutboxMsg
	var created, available int64
	if err := s.Scan(&m.ID, &m.EventID, &m.Subject, &m.MsgID, &m.Payload, &created, &available, &m.TraceParent); err != nil {
		return store.OutboxMsg{}, err
	}
	m.CreatedAt, m.AvailableAt = fromMicros(created), fromMicros(available)
	return m, nil
}

const sqlOutboxFetch = `SELECT id, event_id, subject, msg_id, payload, created_at, available_at, trace_parent FROM outbox
	WHERE available_at <= ? ORDER BY id LIMIT ?`

func (q *queries) OutboxFetch(ctx context.Context, now time.Time, limit int) ([]store.OutboxMsg, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := q.query(ctx, sqlOutboxFetch, micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: fetch outbox: %w", err)
	}
	return collect(rows, scanOutbox, "fetch outbox")
}

func (q *queries) Stats(ctx context.Context) (store.Stats, error) {
	var s store.Stats
	err := q.queryRow(ctx, `SELECT
		(SELECT count(*) FROM executions WHERE status = 'running'),
		(SELECT count(*) FROM commands WHERE `+liveStatus+`),
		(SELECT count(*) FROM outbox) + (SELECT count(*) FROM commands WHERE notify_at IS NOT NULL)`).
		Scan(&s.ExecutionsRunning, &s.CommandsPending, &s.OutboxDepth)
	if err != nil {
		return store.Stats{}, fmt.Errorf("sqlitedriver: stats: %w", err)
	}
	return s, nil
}

func (q *queries) ExecutionChildren(ctx context.Context, parent int64) ([]store.Execution, error) {
	rows, err := q.query(ctx, `SELECT `+executionCols+` FROM executions WHERE parent_execution_id = ? ORDER BY execution_id`, parent)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list child executions of %d: %w", parent, err)
	}
	return collect(rows, scanExecution, "list child executions")
}

// --- loops ------------------------------------------------------------------

const loopCols = `loop_id, execution_id, step, total, mode, max_in_flight, items, status, result, created_at, updated_at`

func scanLoop(s scanner) (store.Loop, error) {
	var l store.Loop
	var items, result []byte
	var created, updated int64
	err := s.Scan(&l.LoopID, &l.ExecutionID, &l.Step, &l.Total, &l.Mode, &l.MaxInFlight, &items, &l.Status, &result, &created, &updated)
	if err != nil {
		return store.Loop{}, err
	}
	l.Items, l.Result = fromJSON(items), fromJSON(result)
	l.CreatedAt, l.UpdatedAt = fromMicros(created), fromMicros(updated)
	return l, nil
}

func (q *queries) LoopGet(ctx context.Context, loopID int64) (store.Loop, error) {
	l, err := scanLoop(q.queryRow(ctx, `SELECT `+loopCols+` FROM loops WHERE loop_id = ?`, loopID))
	if err != nil {
		return l, notFound(err, "loop %d", loopID)
	}
	return l, nil
}

func (q *queries) LoopListByExecution(ctx context.Context, executionID int64) ([]store.Loop, error) {
	rows, err := q.query(ctx, sqlLoopListByExecution, executionID)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list loops of execution %d: %w", executionID, err)
	}
	return collect(rows, scanLoop, "list loops")
}

// --- credentials and blobs --------------------------------------------------

const credentialCols = `name, kind, description, data, created_at, updated_at`

func scanCredential(s scanner) (store.Credential, error) {
	var c store.Credential
	var created, updated int64
	if err := s.Scan(&c.Name, &c.Kind, &c.Description, &c.Data, &created, &updated); err != nil {
		return store.Credential{}, err
	}
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	return c, nil
}

func (q *queries) CredentialGet(ctx context.Context, name string) (store.Credential, error) {
	c, err := scanCredential(q.queryRow(ctx, `SELECT `+credentialCols+` FROM credentials WHERE name = ?`, name))
	if err != nil {
		return c, notFound(err, "credential %q", name)
	}
	if c.Data == nil {
		c.Data = []byte{} // an empty secret is still a value, as on PostgreSQL
	}
	return c, nil
}

func (q *queries) CredentialList(ctx context.Context) ([]store.Credential, error) {
	// NULL for data: listing never ships the sealed secrets.
	rows, err := q.query(ctx, `SELECT name, kind, description, NULL, created_at, updated_at FROM credentials ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list credentials: %w", err)
	}
	return collect(rows, scanCredential, "list credentials")
}

func (q *queries) BlobGet(ctx context.Context, id int64) ([]byte, error) {
	var data []byte
	if err := q.queryRow(ctx, `SELECT data FROM blobs WHERE id = ?`, id).Scan(&data); err != nil {
		return nil, notFound(err, "blob %d", id)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}
