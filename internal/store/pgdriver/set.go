package pgdriver

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
	// value (1-based), anything else is SQL as is.
	exprs []string
	// types are the PostgreSQL types of the row function's values, for
	// the unnest arrays.
	types []string
}

var (
	executionKind = rowKind{what: "execution", table: "executions",
		cols:  strings.Split(execCols, ", "),
		exprs: seq(16),
		types: []string{"bigint", "bigint", "text", "integer", "text", "json", "timestamptz", "timestamptz", "json", "text", "bigint", "json",
			"integer", "bigint", "integer", "integer"},
	}
	eventKind = rowKind{what: "event", table: "events",
		cols:  strings.Split(eventCols, ", "),
		exprs: seq(11),
		types: []string{"bigint", "bigint", "text", "text", "text", "text", "json", "text", "text", "integer", "timestamptz"},
	}
	// published_at = available_at starts the reaper's unclaimed timer only
	// once a delayed (retry) command can actually be notified; notify_at =
	// available_at is its first notification, pending in the row itself.
	commandKind = rowKind{what: "command", table: "commands",
		cols: []string{"event_id", "execution_id", "command_id", "step", "tool", "input", "status",
			"attempt", "publishes", "published_at", "available_at", "loop_id", "loop_index", "retry", "created_at", "updated_at", "pool",
			"notify_at", "trace_parent"},
		exprs: []string{"$1", "$2", "$3", "$4", "$5", "$6", "'issued'", "0", "1", "$7", "$7", "$8", "$9", "$10", "$11", "$11", "$12", "$7", "$13"},
		types: []string{"bigint", "bigint", "text", "text", "json", "json", "timestamptz", "bigint", "integer", "integer", "timestamptz", "text", "text"},
	}
	outboxKind = rowKind{what: "outbox message", table: "outbox",
		cols:  strings.Split(outboxCols, ", "),
		exprs: seq(8),
		types: []string{"bigint", "bigint", "text", "text", "bytea", "timestamptz", "timestamptz", "text"},
	}

	sqlExecutionInsert = executionKind.insertSQL()
	sqlEventInsert     = eventKind.insertSQL()
	sqlCommandInsert   = commandKind.insertSQL()
	sqlOutboxInsert    = outboxKind.insertSQL()

	sqlExecutionSet = executionKind.setSQL()
	sqlEventSet     = eventKind.setSQL()
	sqlCommandSet   = commandKind.setSQL()
	sqlOutboxSet    = outboxKind.setSQL()

	// Touches: the caller holds the row locks (LockExecution), so the
	// update cannot wait.
	sqlExecutionTouch    = "UPDATE executions SET revision = $2 WHERE execution_id = $1"
	sqlExecutionTouchSet = "UPDATE executions SET revision = u.rev FROM unnest($1::bigint[], $2::bigint[]) AS u(id, rev) WHERE execution_id = u.id"
)

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

// insertSQL is the one-row INSERT … VALUES ($1, …).
func (k rowKind) insertSQL() string {
	vals := make([]string, len(k.exprs))
	for i, e := range k.exprs {
		if n := param(e); n != "" {
			vals[i] = "$" + n
		} else {
			vals[i] = e
		}
	}
	return "INSERT INTO " + k.table + " (" + strings.Join(k.cols, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ")"
}

// setSQL is the many-row INSERT … SELECT FROM unnest($1::type[], …): one
// array per value of the row function.
func (k rowKind) setSQL() string {
	arrays := make([]string, len(k.types))
	names := make([]string, len(k.types))
	for i, t := range k.types {
		arrays[i] = fmt.Sprintf("$%d::%s[]", i+1, t)
		names[i] = fmt.Sprintf("p%d", i+1)
	}
	sel := make([]string, len(k.exprs))
	for i, e := range k.exprs {
		if n := param(e); n != "" {
			sel[i] = "u.p" + n
		} else {
			sel[i] = e
		}
	}
	return "INSERT INTO " + k.table + " (" + strings.Join(k.cols, ", ") + ") SELECT " + strings.Join(sel, ", ") +
		" FROM unnest(" + strings.Join(arrays, ", ") + ") AS u(" + strings.Join(names, ", ") + ")"
}

// The row functions: the values ExecutionInsert, EventInsert,
// CommandInsert and OutboxInsert write, defaults applied.

func executionRow(e store.Execution) []any {
	status := e.Status
	if status == "" {
		status = api.ExecRunning
	}
	return []any{e.ExecutionID, e.CatalogID, e.Path, e.Version, string(status), jsonArg(e.Workload),
		tsOrNow(e.StartedAt), tsPtrArg(e.EndedAt), jsonArg(e.Result), e.Error, e.ParentExecutionID, jsonArg(e.Context),
		e.Depth, e.ParentCommandID, e.ParentTask, e.ParentAttempt}
}

func eventRow(e store.Event) []any {
	return []any{e.EventID, e.ExecutionID, e.EventType, e.Step, e.CommandID, e.Status,
		jsonArg(e.Result), e.Error, e.WorkerID, e.Attempt, tsOrNow(e.CreatedAt)}
}

func commandRow(c store.Command) []any {
	created := tsOrNow(c.CreatedAt)
	available := created
	if !c.AvailableAt.IsZero() {
		available = ts(c.AvailableAt)
	}
	return []any{c.EventID, c.ExecutionID, c.CommandID, c.Step, jsonArg(c.Tool), jsonArg(c.Input), available,
		c.LoopID, c.LoopIndex, c.Retry, created, c.Pool, c.TraceParent}
}

func outboxRow(m store.OutboxMsg) []any {
	created := tsOrNow(m.CreatedAt)
	available := created
	if !m.AvailableAt.IsZero() {
		available = ts(m.AvailableAt)
	}
	return []any{m.ID, m.EventID, m.Subject, m.MsgID, m.Payload, created, available, m.TraceParent}
}

// WriteSet implements store.SetTx: one queued statement per non-empty
// kind (executions first, touches last, so a touch finds an execution
// inserted in the same set). Like the row-by-row inserts, the statements
// are queued on the pipe and their errors arrive with the next statement
// that needs an answer, at the latest Release, RollbackTo or Commit; a
// duplicate key is store.ErrConflict.
func (t *tx) WriteSet(ctx context.Context, w *store.Writes) error {
	queueSet(t.tx, executionKind, sqlExecutionInsert, sqlExecutionSet, w.Executions, executionRow)
	queueSet(t.tx, commandKind, sqlCommandInsert, sqlCommandSet, w.Commands, commandRow)
	queueSet(t.tx, eventKind, sqlEventInsert, sqlEventSet, w.Events, eventRow)
	queueSet(t.tx, outboxKind, sqlOutboxInsert, sqlOutboxSet, w.Outbox, outboxRow)
	touches := store.LastTouches(w.Touches)
	if len(touches) == 1 {
		// One row: the primary-key UPDATE. Through unnest the planner
		// estimates 100 rows and joins (0.31 ms a call against 0.019 ms,
		// pg_stat_statements in docs/benchmarks.md, issue 14).
		tc := touches[0]
		t.tx.enqueue(func(err error) error {
			return fmt.Errorf("pgdriver: touch execution %d: %w", tc.ExecutionID, err)
		}, sqlExecutionTouch, tc.ExecutionID, tc.Revision)
	} else if len(touches) > 1 {
		ids := make([]int64, len(touches))
		revs := make([]int64, len(touches))
		for i, tc := range touches {
			ids[i], revs[i] = tc.ExecutionID, tc.Revision
		}
		t.tx.enqueue(func(err error) error {
			return fmt.Errorf("pgdriver: touch %d executions: %w", len(ids), err)
		}, sqlExecutionTouchSet, ids, revs)
	}
	return nil
}

// queueSet queues the set insert of rows: the row function's values
// transposed into one array per value. A single row takes the one-row
// insert, which is cheaper to encode than arrays.
func queueSet[T any](p *pipe, k rowKind, one, sql string, rows []T, row func(T) []any) {
	switch len(rows) {
	case 0:
		return
	case 1:
		args := row(rows[0])
		p.enqueue(insertWrap(fmt.Sprintf("%s %v", k.what, args[0])), one, args...)
		return
	}
	cols := make([][]any, len(k.types))
	for i := range cols {
		cols[i] = make([]any, len(rows))
	}
	for r, v := range rows {
		for i, x := range row(v) {
			cols[i][r] = x
		}
	}
	args := make([]any, len(cols))
	for i := range cols {
		args[i] = cols[i]
	}
	what := fmt.Sprintf("%s (one of a set of %d)", k.what, len(rows))
	p.enqueue(insertWrap(what), sql, args...)
}
