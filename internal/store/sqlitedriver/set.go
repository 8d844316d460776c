package sqlitedriver

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// rowKind is one kind of write-only row. The row-by-row insert
// (ExecutionInsert, EventInsert, …) and the set insert (WriteSet) are both
// built from it, with the same parameters from the same row function, so
// the two cannot write different values.
type rowKind struct {
	what  string // "event": names the row in errors
	table string
	cols  []string
	// exprs[i] is what cols[i] gets: "$n" is the row function's n-th
	// value (1-based), anything else is SQL as is. The row
	// function's first value must be the primary key (never NULL): the set
	// insert pads with NULL rows and drops them by it.
	exprs  []string
	params int // how many values the row function returns
}

// maxSetRows is the most rows one set statement carries; a larger set
// runs as several. 128 rows of the widest kind bind 1,536 variables, far
// below SQLite's limit (32,766).
const maxSetRows = 128

var (
	executionKind = rowKind{what: "execution", table: "executions", cols: splitCols(executionCols), exprs: seq(16), params: 16}
	eventKind     = rowKind{what: "event", table: "events", cols: splitCols(eventCols), exprs: seq(11), params: 11}
	// published_at = available_at starts the reaper's unclaimed timer only
	// once a delayed (retry) command can actually be notified; notify_at =
	// available_at is its first notification, pending in the row itself.
	commandKind = rowKind{what: "command", table: "commands",
		cols: []string{"event_id", "execution_id", "command_id", "step", "tool", "input", "status", "attempt",
			"worker_id", "lease_expires_at", "result", "error", "publishes", "published_at", "available_at", "loop_id",
			"loop_index", "retry", "created_at", "updated_at", "pool", "notify_at", "trace_parent"},
		exprs: []string{"$1", "$2", "$3", "$4", "$5", "$6", "'issued'", "0", "''", "NULL", "NULL", "''", "1", "$7", "$7", "$8",
			"$9", "$10", "$11", "$11", "$12", "$7", "$13"},
		params: 13,
	}
	outboxKind = rowKind{what: "outbox message", table: "outbox",
		cols:  []string{"id", "event_id", "subject", "msg_id", "payload", "created_at", "available_at", "trace_parent"},
		exprs: seq(8), params: 8,
	}

	sqlExecutionInsert = executionKind.insertSQL()
	sqlEventInsert     = eventKind.insertSQL()
	sqlCommandInsert   = commandKind.insertSQL()
	sqlOutboxInsert    = outboxKind.insertSQL()

	// The set statements by kind, for 1, 2, 4, … maxSetRows rows: a set of
	// n rows uses the smallest that fits, padded with NULL rows, so a
	// handful of prepared statements serve every size.
	setExecutionInsert = buckets(executionKind.setSQL)
	setEventInsert     = buckets(eventKind.setSQL)
	setCommandInsert   = buckets(commandKind.setSQL)
	setOutboxInsert    = buckets(outboxKind.setSQL)
	setExecutionTouch  = buckets(touchSetSQL)
)

// The set statements are prepared on the writer with the other hot
// statements.
func init() {
	for _, b := range [][]string{setExecutionInsert, setEventInsert, setCommandInsert, setOutboxInsert, setExecutionTouch} {
		hotQueries = append(hotQueries, b...)
	}
}

func splitCols(cols string) []string {
	s := strings.Split(cols, ",")
	for i := range s {
		s[i] = strings.TrimSpace(s[i])
	}
	return s
}

func seq(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "$" + strconv.Itoa(i+1)
	}
	return s
}

// param is n when expr is "$n", the row function's n-th value, else "".
func param(expr string) string {
	if !strings.HasPrefix(expr, "$") {
		return ""
	}
	return expr[1:]
}

// insertSQL is the one-row INSERT … VALUES (?1, …).
func (k rowKind) insertSQL() string {
	vals := make([]string, len(k.exprs))
	for i, e := range k.exprs {
		if n := param(e); n != "" {
			vals[i] = "?" + n
		} else {
			vals[i] = e
		}
	}
	return "INSERT INTO " + k.table + " (" + strings.Join(k.cols, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ")"
}

// setSQL inserts up to rows rows: INSERT … SELECT … FROM (VALUES (…), …)
// without the padding rows, whose first value is NULL.
func (k rowKind) setSQL(rows int) string {
	sel := make([]string, len(k.exprs))
	for i, e := range k.exprs {
		if n := param(e); n != "" {
			sel[i] = "column" + n
		} else {
			sel[i] = e
		}
	}
	return "INSERT INTO " + k.table + " (" + strings.Join(k.cols, ", ") + ") SELECT " + strings.Join(sel, ", ") +
		" FROM (VALUES " + valuesSQL(rows, k.params) + ") WHERE column1 IS NOT NULL"
}

// touchSetSQL updates the revision of up to rows executions (id, revision);
// padding rows have a NULL id and match nothing.
func touchSetSQL(rows int) string {
	return "UPDATE executions SET revision = u.column2 FROM (VALUES " + valuesSQL(rows, 2) +
		") AS u WHERE executions.execution_id = u.column1"
}

// valuesSQL is rows tuples of params anonymous variables: (?, ?), (?, ?).
// Not numbered (?1): modernc.org/sqlite looks up every variable's name
// when binding, a linear search per variable, so a statement of numbered
// variables binds in quadratic time.
func valuesSQL(rows, params int) string {
	tuple := "(?" + strings.Repeat(", ?", params-1) + ")"
	return tuple + strings.Repeat(", "+tuple, rows-1)
}

// buckets is sql(1), sql(2), sql(4), … sql(maxSetRows).
func buckets(sql func(rows int) string) []string {
	var out []string
	for n := 1; n <= maxSetRows; n *= 2 {
		out = append(out, sql(n))
	}
	return out
}

// bucket is the index in buckets' result of the smallest statement that
// holds n (1 <= n <= maxSetRows) rows, and its size.
func bucket(n int) (int, int) {
	i, size := 0, 1
	for size < n {
		i, size = i+1, size*2
	}
	return i, size
}

// The row functions: the values ExecutionInsert, EventInsert,
// CommandInsert and OutboxInsert write, defaults applied.

func executionRow(e store.Execution) []any {
	status := e.Status
	if status == "" {
		status = api.ExecRunning
	}
	return []any{e.ExecutionID, e.CatalogID, e.Path, e.Version, string(status), jsonArg(e.Workload),
		micros(nowIfZero(e.StartedAt)), microsPtr(e.EndedAt), jsonArg(e.Result), e.Error, e.ParentExecutionID, jsonArg(e.Context),
		e.Depth, e.ParentCommandID, e.ParentTask, e.ParentAttempt}
}

func eventRow(e store.Event) []any {
	return []any{e.EventID, e.ExecutionID, e.EventType, e.Step, e.CommandID, e.Status,
		jsonArg(e.Result), e.Error, e.WorkerID, e.Attempt, micros(nowIfZero(e.CreatedAt))}
}

func commandRow(c store.Command) []any {
	created := micros(nowIfZero(c.CreatedAt))
	available := created
	if !c.AvailableAt.IsZero() {
		available = micros(c.AvailableAt)
	}
	return []any{c.EventID, c.ExecutionID, c.CommandID, c.Step, jsonArg(c.Tool), jsonArg(c.Input), available,
		c.LoopID, c.LoopIndex, c.Retry, created, c.Pool, c.TraceParent}
}

func outboxRow(m store.OutboxMsg) []any {
	payload := m.Payload
	if payload == nil {
		payload = []byte{} // the column is NOT NULL; no payload is an empty one
	}
	created := micros(nowIfZero(m.CreatedAt))
	available := created
	if !m.AvailableAt.IsZero() {
		available = micros(m.AvailableAt)
	}
	return []any{m.ID, m.EventID, m.Subject, m.MsgID, payload, created, available, m.TraceParent}
}

func touchRow(t store.Touch) []any { return []any{t.ExecutionID, t.Revision} }

// WriteSet implements store.SetTx: one statement per non-empty kind and
// maxSetRows rows (executions first, touches last, so a touch finds an
// execution inserted in the same set). A duplicate key is
// store.ErrConflict; a touch of a missing execution store.ErrNotFound, as
// ExecutionTouch's.
func (t *tx) WriteSet(ctx context.Context, w *store.Writes) error {
	if err := writeSet(ctx, t, executionKind, setExecutionInsert, w.Executions, executionRow); err != nil {
		return err
	}
	if err := writeSet(ctx, t, commandKind, setCommandInsert, w.Commands, commandRow); err != nil {
		return err
	}
	if err := writeSet(ctx, t, eventKind, setEventInsert, w.Events, eventRow); err != nil {
		return err
	}
	if err := writeSet(ctx, t, outboxKind, setOutboxInsert, w.Outbox, outboxRow); err != nil {
		return err
	}
	touches := store.LastTouches(w.Touches)
	n, err := execSet(ctx, t, setExecutionTouch, 2, touches, touchRow)
	if err != nil {
		return fmt.Errorf("sqlitedriver: touch %d executions: %w", len(touches), err)
	}
	if n != int64(len(touches)) {
		return fmt.Errorf("touch %d executions: %d of them: %w", len(touches), int64(len(touches))-n, store.ErrNotFound)
	}
	return nil
}

func writeSet[T any](ctx context.Context, t *tx, k rowKind, stmts []string, rows []T, row func(T) []any) error {
	if _, err := execSet(ctx, t, stmts, k.params, rows, row); err != nil {
		return insertErr(err, "%s (one of a set of %d)", k.what, len(rows))
	}
	return nil
}

// execSet runs rows through the bucketed statements stmts, maxSetRows at
// a time, and returns how many rows they changed.
func execSet[T any](ctx context.Context, t *tx, stmts []string, params int, rows []T, row func(T) []any) (int64, error) {
	var changed int64
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), maxSetRows)]
		rows = rows[len(chunk):]
		i, size := bucket(len(chunk))
		args := make([]any, 0, size*params)
		for _, v := range chunk {
			args = append(args, row(v)...)
		}
		args = args[:size*params] // padding: nil, which binds NULL
		res, err := t.exec(ctx, stmts[i], args...)
		if err != nil {
			return changed, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return changed, err
		}
		changed += n
	}
	return changed, nil
}
