package pgdriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/millrace/millrace/internal/store"
)

// dbtx is what both *pgxpool.Pool and pgx.Tx offer.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// querier implements store.Querier over a pool (Driver.Read) or a
// transaction (tx embeds it).
type querier struct {
	db dbtx
}

var _ store.Querier = querier{}

// Column lists shared by SELECTs and RETURNING clauses, in scan order.
const (
	catalogCols = "catalog_id, path, version, name, content, created_at"
	execCols    = "execution_id, catalog_id, path, version, status, workload, started_at, ended_at, result, error, parent_execution_id, context, depth, parent_command_id, parent_task, parent_attempt"
	eventCols   = "event_id, execution_id, event_type, step, command_id, status, result, error, worker_id, attempt, created_at"
	// Commands are always aliased c so the same list serves joins and
	// UPDATE ... AS c RETURNING.
	commandCols = "c.event_id, c.execution_id, c.command_id, c.step, c.tool, c.input, c.status, c.attempt, c.worker_id, " +
		"c.lease_expires_at, c.result, c.error, c.publishes, c.published_at, c.available_at, c.loop_id, c.loop_index, c.retry, " +
		"c.created_at, c.updated_at, c.claim_token_id, c.pool"
	outboxCols     = "id, event_id, subject, msg_id, payload, created_at, available_at, trace_parent"
	loopCols       = "loop_id, execution_id, step, total, mode, max_in_flight, items, status, result, created_at, updated_at"
	credentialCols = "name, kind, description, data, created_at, updated_at"
)

// liveStatuses are the non-terminal command statuses, as a SQL list.
const liveStatuses = "('issued', 'claimed', 'running')"

// ts normalises a time for storage: UTC, truncated to the microsecond
// precision PostgreSQL keeps (the server would round instead).
func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// tsOrNow is ts(t), or the current time when t is zero.
func tsOrNow(t time.Time) time.Time {
	if t.IsZero() {
		return ts(time.Now())
	}
	return ts(t)
}

func tsPtrArg(p *time.Time) any {
	if p == nil {
		return nil
	}
	return ts(*p)
}

func utcPtr(p *time.Time) *time.Time {
	if p == nil {
		return nil
	}
	u := p.UTC()
	return &u
}

// jsonArg stores an empty document as NULL and otherwise sends the bytes
// untouched so they round-trip exactly.
func jsonArg(m json.RawMessage) any {
	if len(m) == 0 {
		return nil
	}
	return []byte(m)
}

// bytesArg stores nil as an empty value: the byte columns are NOT NULL,
// and an empty secret or blob is still a value.
func bytesArg(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func scanCatalog(row pgx.Row) (store.CatalogEntry, error) {
	var c store.CatalogEntry
	err := row.Scan(&c.CatalogID, &c.Path, &c.Version, &c.Name, &c.Content, &c.CreatedAt)
	c.CreatedAt = c.CreatedAt.UTC()
	return c, err
}

func scanExecution(row pgx.Row) (store.Execution, error) {
	var (
		e                         store.Execution
		workload, result, context []byte
	)
	err := row.Scan(&e.ExecutionID, &e.CatalogID, &e.Path, &e.Version, &e.Status, &workload,
		&e.StartedAt, &e.EndedAt, &result, &e.Error, &e.ParentExecutionID, &context,
		&e.Depth, &e.ParentCommandID, &e.ParentTask, &e.ParentAttempt)
	e.Workload, e.Result, e.Context = workload, result, context
	e.StartedAt, e.EndedAt = e.StartedAt.UTC(), utcPtr(e.EndedAt)
	return e, err
}

func scanEvent(row pgx.Row) (store.Event, error) {
	var (
		e      store.Event
		result []byte
	)
	err := row.Scan(&e.EventID, &e.ExecutionID, &e.EventType, &e.Step, &e.CommandID, &e.Status,
		&result, &e.Error, &e.WorkerID, &e.Attempt, &e.CreatedAt)
	e.Result = result
	e.CreatedAt = e.CreatedAt.UTC()
	return e, err
}

func scanCommand(row pgx.Row) (store.Command, error) {
	var (
		c                   store.Command
		tool, input, result []byte
	)
	err := row.Scan(&c.EventID, &c.ExecutionID, &c.CommandID, &c.Step, &tool, &input, &c.Status,
		&c.Attempt, &c.WorkerID, &c.LeaseExpires, &result, &c.Error, &c.Publishes,
		&c.PublishedAt, &c.AvailableAt, &c.LoopID, &c.LoopIndex, &c.Retry, &c.CreatedAt, &c.UpdatedAt, &c.ClaimTokenID, &c.Pool)
	c.Tool, c.Input, c.Result = tool, input, result
	c.LeaseExpires = utcPtr(c.LeaseExpires)
	c.PublishedAt, c.AvailableAt = c.PublishedAt.UTC(), c.AvailableAt.UTC()
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

func scanOutbox(row pgx.Row) (store.OutboxMsg, error) {
	var m store.OutboxMsg
	err := row.Scan(&m.ID, &m.EventID, &m.Subject, &m.MsgID, &m.Payload, &m.CreatedAt, &m.AvailableAt, &m.TraceParent)
	m.CreatedAt, m.AvailableAt = m.CreatedAt.UTC(), m.AvailableAt.UTC()
	return m, err
}

func scanLoop(row pgx.Row) (store.Loop, error) {
	var (
		l             store.Loop
		items, result []byte
	)
	err := row.Scan(&l.LoopID, &l.ExecutionID, &l.Step, &l.Total, &l.Mode, &l.MaxInFlight, &items,
		&l.Status, &result, &l.CreatedAt, &l.UpdatedAt)
	l.Items, l.Result = items, result
	l.CreatedAt, l.UpdatedAt = l.CreatedAt.UTC(), l.UpdatedAt.UTC()
	return l, err
}

func scanCredential(row pgx.Row) (store.Credential, error) {
	var c store.Credential
	err := row.Scan(&c.Name, &c.Kind, &c.Description, &c.Data, &c.CreatedAt, &c.UpdatedAt)
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

// collect scans every row of a query with scan.
func collect[T any](rows pgx.Rows, err error, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
}

// notFound turns pgx.ErrNoRows into store.ErrNotFound, naming what was
// missing.
func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("pgdriver: %s: %w", what, err)
}

// limitArg maps a non-positive limit to NULL, which PostgreSQL reads as
// LIMIT ALL.
func limitArg(limit int) any {
	if limit <= 0 {
		return nil
	}
	return limit
}

func (q querier) CatalogGet(ctx context.Context, path string, version int) (store.CatalogEntry, error) {
	var row pgx.Row
	if version == 0 {
		row = q.db.QueryRow(ctx, "SELECT "+catalogCols+" FROM catalog WHERE path = $1 ORDER BY version DESC LIMIT 1", path)
	} else {
		row = q.db.QueryRow(ctx, "SELECT "+catalogCols+" FROM catalog WHERE path = $1 AND version = $2", path, version)
	}
	c, err := scanCatalog(row)
	if err != nil {
		return store.CatalogEntry{}, notFound(err, fmt.Sprintf("catalog %s version %d", path, version))
	}
	return c, nil
}

func (q querier) CatalogGetByID(ctx context.Context, catalogID int64) (store.CatalogEntry, error) {
	c, err := scanCatalog(q.db.QueryRow(ctx, "SELECT "+catalogCols+" FROM catalog WHERE catalog_id = $1", catalogID))
	if err != nil {
		return store.CatalogEntry{}, notFound(err, fmt.Sprintf("catalog id %d", catalogID))
	}
	return c, nil
}

func (q querier) CatalogList(ctx context.Context) ([]store.CatalogEntry, error) {
	rows, err := q.db.Query(ctx, `SELECT DISTINCT ON (path) catalog_id, path, version, name, '', created_at
		FROM catalog ORDER BY path, version DESC`)
	list, err := collect(rows, err, scanCatalog)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list catalog: %w", err)
	}
	return list, nil
}

func (q querier) ExecutionGet(ctx context.Context, id int64) (store.Execution, error) {
	e, err := scanExecution(q.db.QueryRow(ctx, "SELECT "+execCols+" FROM executions WHERE execution_id = $1", id))
	if err != nil {
		return store.Execution{}, notFound(err, fmt.Sprintf("execution %d", id))
	}
	return e, nil
}

func (q querier) ExecutionList(ctx context.Context, f store.ExecutionFilter, offset, limit int) ([]store.Execution, int64, error) {
	where, args := " WHERE true", []any{}
	if f.Status != "" {
		args = append(args, string(f.Status))
		where += fmt.Sprintf(" AND status = $%d", len(args))
	}
	switch {
	case f.PathPrefix && f.Path != "":
		// left(), not LIKE: the prefix may hold % and _.
		args = append(args, f.Path)
		where += fmt.Sprintf(" AND left(path, length($%d::text)) = $%d::text", len(args), len(args))
	case f.Path != "":
		args = append(args, f.Path)
		where += fmt.Sprintf(" AND path = $%d", len(args))
	}
	var total int64
	if err := q.db.QueryRow(ctx, "SELECT count(*) FROM executions"+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("pgdriver: count executions: %w", err)
	}
	n := len(args)
	rows, err := q.db.Query(ctx, "SELECT "+execCols+" FROM executions"+where+fmt.Sprintf(" ORDER BY execution_id DESC OFFSET $%d LIMIT $%d", n+1, n+2),
		append(args, max(offset, 0), limitArg(limit))...)
	list, err := collect(rows, err, scanExecution)
	if err != nil {
		return nil, 0, fmt.Errorf("pgdriver: list executions: %w", err)
	}
	return list, total, nil
}

func (q querier) EventList(ctx context.Context, executionID int64) ([]store.Event, error) {
	rows, err := q.db.Query(ctx, "SELECT "+eventCols+" FROM events WHERE execution_id = $1 ORDER BY event_id", executionID)
	list, err := collect(rows, err, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list events of execution %d: %w", executionID, err)
	}
	return list, nil
}

func (q querier) EventListOfType(ctx context.Context, executionID int64, eventType string) ([]store.Event, error) {
	rows, err := q.db.Query(ctx, "SELECT "+eventCols+" FROM events WHERE execution_id = $1 AND event_type = $2 ORDER BY event_id", executionID, eventType)
	list, err := collect(rows, err, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list %s events of execution %d: %w", eventType, executionID, err)
	}
	return list, nil
}

func (q querier) EventsAfter(ctx context.Context, executionID, afterID int64, types []string, limit int) ([]store.Event, error) {
	sql, args := "SELECT "+eventCols+" FROM events WHERE event_id > $1", []any{afterID}
	if executionID != 0 {
		args = append(args, executionID)
		sql += fmt.Sprintf(" AND execution_id = $%d", len(args))
	}
	if len(types) > 0 {
		args = append(args, types)
		sql += fmt.Sprintf(" AND event_type = ANY($%d)", len(args))
	}
	args = append(args, limit)
	sql += fmt.Sprintf(" ORDER BY event_id LIMIT $%d", len(args))
	rows, err := q.db.Query(ctx, sql, args...)
	list, err := collect(rows, err, scanEvent)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list events after %d: %w", afterID, err)
	}
	return list, nil
}

func (q querier) CommandGet(ctx context.Context, eventID int64) (store.Command, error) {
	c, err := scanCommand(q.db.QueryRow(ctx, "SELECT "+commandCols+" FROM commands AS c WHERE c.event_id = $1", eventID))
	if err != nil {
		return store.Command{}, notFound(err, fmt.Sprintf("command %d", eventID))
	}
	return c, nil
}

func (q querier) CommandListByExecution(ctx context.Context, executionID int64) ([]store.Command, error) {
	rows, err := q.db.Query(ctx, "SELECT "+commandCols+" FROM commands AS c WHERE c.execution_id = $1 ORDER BY c.event_id", executionID)
	list, err := collect(rows, err, scanCommand)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list commands of execution %d: %w", executionID, err)
	}
	return list, nil
}

// CommandsDue skips an expired lease that was re-notified after it expired
// until that notification has aged past unclaimedBefore; otherwise such
// commands would come back on every pass and, filling the limit, starve
// the commands behind them.
func (q querier) CommandsDue(ctx context.Context, now, unclaimedBefore time.Time, limit int) ([]store.Command, error) {
	rows, err := q.db.Query(ctx, "SELECT "+commandCols+` FROM commands AS c
		JOIN executions AS e ON e.execution_id = c.execution_id AND e.status = 'running'
		WHERE c.status IN `+liveStatuses+`
		  AND ((c.status = 'issued' AND c.published_at <= $2)
		    OR (c.status IN ('claimed', 'running') AND c.lease_expires_at <= $1
		        AND (c.published_at < c.lease_expires_at OR c.published_at <= $2)))
		  AND c.notify_at IS NULL
		  AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.event_id = c.event_id)
		ORDER BY c.event_id
		LIMIT $3`, ts(now), ts(unclaimedBefore), limitArg(limit))
	list, err := collect(rows, err, scanCommand)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list due commands: %w", err)
	}
	return list, nil
}

func (q querier) OutboxFetch(ctx context.Context, now time.Time, limit int) ([]store.OutboxMsg, error) {
	rows, err := q.db.Query(ctx, "SELECT "+outboxCols+" FROM outbox WHERE available_at <= $1 ORDER BY id LIMIT $2",
		ts(now), limitArg(limit))
	list, err := collect(rows, err, scanOutbox)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: fetch outbox: %w", err)
	}
	return list, nil
}

func (q querier) Stats(ctx context.Context) (store.Stats, error) {
	var s store.Stats
	err := q.db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM executions WHERE status = 'running'),
		(SELECT count(*) FROM commands WHERE status IN `+liveStatuses+`),
		(SELECT count(*) FROM outbox) + (SELECT count(*) FROM commands WHERE notify_at IS NOT NULL)`).
		Scan(&s.ExecutionsRunning, &s.CommandsPending, &s.OutboxDepth)
	if err != nil {
		return store.Stats{}, fmt.Errorf("pgdriver: stats: %w", err)
	}
	return s, nil
}

func (q querier) ExecutionChildren(ctx context.Context, parent int64) ([]store.Execution, error) {
	rows, err := q.db.Query(ctx, "SELECT "+execCols+" FROM executions WHERE parent_execution_id = $1 ORDER BY execution_id", parent)
	list, err := collect(rows, err, scanExecution)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list child executions of %d: %w", parent, err)
	}
	return list, nil
}

func (q querier) LoopGet(ctx context.Context, loopID int64) (store.Loop, error) {
	l, err := scanLoop(q.db.QueryRow(ctx, "SELECT "+loopCols+" FROM loops WHERE loop_id = $1", loopID))
	if err != nil {
		return store.Loop{}, notFound(err, fmt.Sprintf("loop %d", loopID))
	}
	return l, nil
}

func (q querier) LoopListByExecution(ctx context.Context, executionID int64) ([]store.Loop, error) {
	rows, err := q.db.Query(ctx, "SELECT "+loopCols+" FROM loops WHERE execution_id = $1 ORDER BY loop_id", executionID)
	list, err := collect(rows, err, scanLoop)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list loops of execution %d: %w", executionID, err)
	}
	return list, nil
}

func (q querier) CredentialGet(ctx context.Context, name string) (store.Credential, error) {
	c, err := scanCredential(q.db.QueryRow(ctx, "SELECT "+credentialCols+" FROM credentials WHERE name = $1", name))
	if err != nil {
		return store.Credential{}, notFound(err, fmt.Sprintf("credential %q", name))
	}
	return c, nil
}

func (q querier) CredentialList(ctx context.Context) ([]store.Credential, error) {
	// NULL for data: listing never ships the sealed secrets. COLLATE "C"
	// gives byte order whatever the database locale, as SQLite does.
	rows, err := q.db.Query(ctx, `SELECT name, kind, description, NULL::bytea, created_at, updated_at FROM credentials ORDER BY name COLLATE "C"`)
	list, err := collect(rows, err, scanCredential)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list credentials: %w", err)
	}
	return list, nil
}

func (q querier) BlobGet(ctx context.Context, id int64) ([]byte, error) {
	var data []byte
	if err := q.db.QueryRow(ctx, "SELECT data FROM blobs WHERE id = $1", id).Scan(&data); err != nil {
		return nil, notFound(err, fmt.Sprintf("blob %d", id))
	}
	return data, nil
}
