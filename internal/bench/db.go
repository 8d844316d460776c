package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	// database/sql drivers: pgx for PostgreSQL; modernc's "sqlite" is
	// registered by the SQLite store driver the server links.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// db is the benchmark's own connection to a self-contained run's store,
// beside the server's: it prefills history, reads pg_stat_statements and
// measures the tables. It never takes part in the measured work.
type db struct {
	kind string // "postgres" or "sqlite"
	sql  *sql.DB
}

// openDB connects to the store the stack's servers use: dbURL is the
// postgres URL with the run's search_path, or sqlite:PATH.
func openDB(kind, dbURL string) (*db, error) {
	var (
		d   *sql.DB
		err error
	)
	switch kind {
	case "postgres":
		d, err = sql.Open("pgx", dbURL)
	case "sqlite":
		path := strings.TrimPrefix(dbURL, "sqlite:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		// The server's writer holds the lock in short transactions; wait
		// for it rather than fail.
		d, err = sql.Open("sqlite", "file:"+filepath.Clean(path)+"?_txlock=immediate&_pragma=busy_timeout(60000)")
		if err == nil {
			d.SetMaxOpenConns(1)
		}
	default:
		return nil, fmt.Errorf("bench: no direct connection for store kind %q", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: open the store directly: %w", err)
	}
	return &db{kind: kind, sql: d}, nil
}

func (d *db) close() { _ = d.sql.Close() }

// Statements is what pg_stat_statements counted in the store's database
// between the first submit and the last completion.
type Statements struct {
	Total        int64          `json:"total"`
	PerExecution float64        `json:"per_execution"`
	Top          []StatementUse `json:"top"`
}

// StatementUse is one normalized statement and its calls in the window.
type StatementUse struct {
	Calls        int64   `json:"calls"`
	PerExecution float64 `json:"per_execution"`
	Query        string  `json:"query"`
}

// statementsTop is how many statements the report lists.
const statementsTop = 12

type statementCounts map[int64]StatementUse

// statementCounts reads pg_stat_statements for this database. It fails
// when the extension is not installed (CREATE EXTENSION pg_stat_statements)
// or not preloaded (shared_preload_libraries).
func (d *db) statementCounts(ctx context.Context) (statementCounts, error) {
	if d.kind != "postgres" {
		return nil, nil
	}
	// The view is in the extension's schema, not on the run's search_path.
	var schema string
	if err := d.sql.QueryRowContext(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
		WHERE e.extname = 'pg_stat_statements'`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("find pg_stat_statements: %w", err)
	}
	rows, err := d.sql.QueryContext(ctx, `SELECT coalesce(queryid, 0), sum(calls)::bigint, min(query)
		FROM `+quoteIdent(schema)+`.pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		GROUP BY 1`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := statementCounts{}
	for rows.Next() {
		var id int64
		var u StatementUse
		if err := rows.Scan(&id, &u.Calls, &u.Query); err != nil {
			return nil, err
		}
		out[id] = u
	}
	return out, rows.Err()
}

// statementsSince is the difference of two readings over executions.
func statementsSince(before, after statementCounts, executions int) *Statements {
	if before == nil || after == nil || executions == 0 {
		return nil
	}
	st := &Statements{}
	for id, a := range after {
		calls := a.Calls - before[id].Calls
		if calls <= 0 {
			continue
		}
		st.Total += calls
		q := strings.Join(strings.Fields(a.Query), " ")
		if len(q) > 200 {
			q = q[:200] + "…"
		}
		st.Top = append(st.Top, StatementUse{Calls: calls, PerExecution: float64(calls) / float64(executions), Query: q})
	}
	st.PerExecution = float64(st.Total) / float64(executions)
	slices.SortFunc(st.Top, func(a, b StatementUse) int { return int(b.Calls - a.Calls) })
	st.Top = st.Top[:min(len(st.Top), statementsTop)]
	return st
}

// Storage is the size of the event store's tables after the run.
type Storage struct {
	// Method says how it was measured: pg_total_relation_size (tables,
	// indexes and TOAST, dead rows not yet vacuumed included), dbstat
	// (SQLite pages of the tables and their indexes) or page_count (the
	// whole SQLite file, when dbstat is not compiled in).
	Method string `json:"method"`
	// Executions is every execution stored, prefilled ones included.
	Executions        int64            `json:"executions_stored"`
	Bytes             int64            `json:"bytes"`
	BytesPerExecution float64          `json:"bytes_per_execution"`
	Tables            map[string]int64 `json:"tables"`
}

// storage measures the tables that hold executions, events, commands and
// the outbox: every table with an execution_id or event_id column.
func (d *db) storage(ctx context.Context) (*Storage, error) {
	s := &Storage{Tables: map[string]int64{}}
	if err := d.sql.QueryRowContext(ctx, "SELECT count(*) FROM executions").Scan(&s.Executions); err != nil {
		return nil, err
	}
	var q string
	switch d.kind {
	case "postgres":
		s.Method = "pg_total_relation_size"
		// A partitioned table is the sum of its partitions.
		q = `SELECT c.relname, CASE WHEN c.relkind = 'p'
				THEN (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_partition_tree(c.oid))
				ELSE pg_total_relation_size(c.oid) END
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
			  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT a.attisdropped AND a.attname IN ('execution_id', 'event_id'))`
	case "sqlite":
		s.Method = "dbstat"
		q = `SELECT m.tbl_name, sum(s.pgsize)
			FROM dbstat s JOIN sqlite_master m ON m.name = s.name
			WHERE m.tbl_name IN (SELECT t.name FROM sqlite_master t, pragma_table_info(t.name) c
			                     WHERE t.type = 'table' AND c.name IN ('execution_id', 'event_id'))
			GROUP BY m.tbl_name`
	}
	rows, err := d.sql.QueryContext(ctx, q)
	if err != nil && d.kind == "sqlite" {
		// Without dbstat: the whole file, every table included.
		s.Method = "page_count"
		rows, err = d.sql.QueryContext(ctx, "SELECT 'all', page_count * page_size FROM pragma_page_count(), pragma_page_size()")
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		s.Tables[name] = n
		s.Bytes += n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if s.Executions > 0 {
		s.BytesPerExecution = float64(s.Bytes) / float64(s.Executions)
	}
	return s, nil
}
