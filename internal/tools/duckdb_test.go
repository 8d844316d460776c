//go:build cgo

package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func duckCfg(query string, extra ...any) map[string]any {
	cfg := map[string]any{"kind": "duckdb", "query": query}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i].(string)] = extra[i+1]
	}
	return cfg
}

// duckFile returns a path for a database file in the test's temp dir.
func duckFile(t *testing.T, name string) string {
	t.Helper()
	return filepath.Join(t.TempDir(), name)
}

func TestDuckDBNoETLPlaybookQuery(t *testing.T) {
	t.Parallel()
	// The query of NoETL's duckdb_test.yaml, verbatim.
	res := runOK(t, t.Context(), map[string]any{
		"kind": "duckdb", "database": ":memory:",
		"query": "CREATE TABLE users (id INTEGER, name VARCHAR, age INTEGER);\n" +
			"INSERT INTO users VALUES (1, 'Alice', 30), (2, 'Bob', 25), (3, 'Charlie', 35);\n" +
			"SELECT name, age FROM users WHERE age >= 30 ORDER BY age;\n",
	})
	want := map[string]any{
		"columns": []any{"name", "age"},
		"rows": []any{
			map[string]any{"name": "Alice", "age": int64(30)},
			map[string]any{"name": "Charlie", "age": int64(35)},
		},
		"row_count":     2,
		"rows_affected": int64(3),
	}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("result = %#v\nwant %#v", res, want)
	}
}

func TestDuckDBLastRowsAndAlias(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// "command" is an alias of "query"; statements after the SELECT that
	// return no rows do not replace its rows.
	res := runOK(t, ctx, map[string]any{"kind": "duckdb", "command": `
		CREATE TABLE t (id INTEGER, s VARCHAR);
		INSERT INTO t VALUES (1, 'a;b'), (2, 'it''s'), (3, $$x;y$$);
		SELECT id, s FROM t WHERE id < 3 ORDER BY id; -- the rows we want
		UPDATE t SET s = 'z' WHERE id = 3;
		CREATE TABLE u AS SELECT 1 AS "Count";
		/* a block comment; with a semicolon */`})
	wantRows := []any{map[string]any{"id": int64(1), "s": "a;b"}, map[string]any{"id": int64(2), "s": "it's"}}
	if !reflect.DeepEqual(res["rows"], wantRows) || res["row_count"] != 2 {
		t.Fatalf("rows = %v, want %v", res["rows"], wantRows)
	}
	if res["rows_affected"] != int64(5) { // 3 inserted + 1 updated + 1 by CREATE TABLE AS
		t.Fatalf("rows_affected = %v, want 5", res["rows_affected"])
	}

	// RETURNING makes a write return rows; a SELECT of a column named
	// Count is still a SELECT.
	res = runOK(t, ctx, duckCfg(`CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (7) RETURNING id * 2 AS twice`))
	if !reflect.DeepEqual(res["rows"], []any{map[string]any{"twice": int64(14)}}) {
		t.Fatalf("RETURNING rows = %v", res["rows"])
	}
	res = runOK(t, ctx, duckCfg(`SELECT 5 AS "Count"; CREATE TABLE x (i INTEGER)`))
	if !reflect.DeepEqual(res["rows"], []any{map[string]any{"Count": int64(5)}}) || res["rows_affected"] != int64(0) {
		t.Fatalf("SELECT Count result = %v", res)
	}

	// Writes only: no rows, no columns.
	res = runOK(t, ctx, duckCfg(`CREATE TABLE t (id INTEGER); INSERT INTO t SELECT * FROM range(4)`))
	if res["row_count"] != 0 || len(res["columns"].([]any)) != 0 || res["rows_affected"] != int64(4) {
		t.Fatalf("write-only result = %v", res)
	}
}

func TestDuckDBTypes(t *testing.T) {
	t.Parallel()
	res := runOK(t, t.Context(), duckCfg(`SELECT
		42::INTEGER AS i, 9007199254740993::BIGINT AS big, 1.5::DOUBLE AS f, 0.25::FLOAT AS f4,
		'text ü' AS txt, true AS yes, NULL::INTEGER AS nothing,
		TIMESTAMP '2024-01-02 03:04:05.123' AS ts, TIMESTAMPTZ '2024-01-02 03:04:05+02' AS tstz,
		DATE '2024-01-02' AS d, TIME '10:11:12' AS tm,
		12.50::DECIMAL(10,2) AS num, 12345678901234567890.123::DECIMAL(38,3) AS bignum,
		170141183460469231731687303715884105727::HUGEINT AS huge, 18446744073709551615::UBIGINT AS ubig,
		'{"a": [1, 2.5]}'::JSON AS js, 'ab'::BLOB AS bin, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID AS id,
		[1, 2, 3] AS arr, {'k': 1.5::DECIMAL(4,1)} AS st, MAP {'x': 1} AS m, INTERVAL 3 DAY AS iv,
		'NaN'::DOUBLE AS nan`))
	want := map[string]any{
		"i": int64(42), "big": int64(9007199254740993), "f": 1.5, "f4": 0.25,
		"txt": "text ü", "yes": true, "nothing": nil,
		"ts": "2024-01-02T03:04:05.123Z", "tstz": "2024-01-02T01:04:05Z",
		"d": "2024-01-02", "tm": "10:11:12",
		"num": 12.5, "bignum": "12345678901234567890.123",
		"huge": "170141183460469231731687303715884105727", "ubig": "18446744073709551615",
		"js": map[string]any{"a": []any{1.0, 2.5}}, "bin": "YWI=", "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"arr": []any{int64(1), int64(2), int64(3)}, "st": map[string]any{"k": 1.5}, "m": map[string]any{"x": int64(1)},
		"iv": map[string]any{"months": int64(0), "days": int64(3), "micros": int64(0)}, "nan": "NaN",
	}
	row := res["rows"].([]any)[0].(map[string]any)
	for k, w := range want {
		if !reflect.DeepEqual(row[k], w) {
			t.Errorf("%s = %#v (%T), want %#v (%T)", k, row[k], row[k], w, w)
		}
	}
	if len(row) != len(want) {
		t.Errorf("row has %d columns, want %d", len(row), len(want))
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatalf("result is not JSON-encodable: %v", err)
	}
}

func TestDuckDBFilePersists(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := duckFile(t, "store.duckdb")
	runOK(t, ctx, duckCfg(`CREATE TABLE events (id INTEGER, name VARCHAR)`, "database", path))

	// Runs on one file in one process share it rather than fight over its lock.
	const writers = 4
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := Run(ctx, duckCfg(fmt.Sprintf(`INSERT INTO events VALUES (%d, 'w%d')`, i, i), "database", path))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent insert: %v", err)
		}
	}
	res := runOK(t, ctx, duckCfg(`SELECT count(*) AS n, sum(id) AS total FROM events`, "database", path))
	if got := res["rows"].([]any)[0]; !reflect.DeepEqual(got, map[string]any{"n": int64(writers), "total": int64(6)}) {
		t.Fatalf("after reopening: %v, want 4 rows with ids summing to 6", got)
	}
}

func TestDuckDBAttachFile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	src := duckFile(t, "src.duckdb")
	runOK(t, ctx, duckCfg(`CREATE TABLE prices AS SELECT * FROM (VALUES ('a', 1.5), ('b', 2.5)) v(sku, price)`, "database", src))

	res := runOK(t, ctx, duckCfg(`SELECT sku, price FROM src.prices ORDER BY sku`,
		"attach", []any{map[string]any{"path": src, "alias": "src", "read_only": true}}))
	want := []any{map[string]any{"sku": "a", "price": 1.5}, map[string]any{"sku": "b", "price": 2.5}}
	if !reflect.DeepEqual(res["rows"], want) {
		t.Fatalf("rows = %v, want %v", res["rows"], want)
	}
	e := runErr(t, ctx, duckCfg(`DELETE FROM src.prices`,
		"attach", []any{map[string]any{"path": src, "alias": "src", "read_only": true}}))
	if e.Kind != "duckdb" || e.Retryable || !strings.Contains(strings.ToLower(e.Message), "read-only") {
		t.Fatalf("write to read-only attachment: %+v", e)
	}
}

// TestDuckDBAttachPostgres reads a PostgreSQL table through DuckDB when the
// worker has the postgres extension, and otherwise checks the tool says
// plainly that it is missing (the tool never downloads it).
func TestDuckDBAttachPostgres(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	runOK(t, b.ctx, pgCfg(`CREATE TABLE src (id int, name text); INSERT INTO src VALUES (1, 'from pg')`))
	cfg := duckCfg(fmt.Sprintf(`SELECT id, name FROM pg.%s.src`, b.schema),
		"attach", []any{map[string]any{"postgres": "pg", "alias": "pg"}})

	probe, _ := Run(t.Context(), duckCfg(`SELECT count(*) AS n FROM duckdb_extensions() WHERE extension_name = 'postgres_scanner' AND installed`))
	if probe.(map[string]any)["rows"].([]any)[0].(map[string]any)["n"] == int64(0) {
		e := runErr(t, b.ctx, cfg)
		if e.Kind != "duckdb" || e.Retryable || !strings.Contains(e.Message, "postgres extension, which is not installed") ||
			!strings.Contains(e.Message, "INSTALL postgres") {
			t.Fatalf("without the extension: error = %+v, want a non-retryable duckdb error saying how to install it", e)
		}
		return
	}
	res := runOK(t, b.ctx, cfg)
	if !reflect.DeepEqual(res["rows"], []any{map[string]any{"id": int64(1), "name": "from pg"}}) {
		t.Fatalf("rows through postgres attachment = %v", res["rows"])
	}
}

func TestDuckDBErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		cfg  map[string]any
		kind string
		want string
	}{
		{"sql error", duckCfg(`CREATE TABLE t (i INTEGER); SELECT * FROM nope`), "duckdb", `statement 2 of 2: Catalog Error: Table with name nope does not exist`},
		{"syntax error", duckCfg(`SELEC 1`), "duckdb", "syntax error"},
		{"no query", duckCfg(""), ErrorKindConfig, "query"},
		{"only comments", duckCfg("-- nothing\n;/* here */"), ErrorKindConfig, "no SQL statements"},
		{"query and command", duckCfg("SELECT 1", "command", "SELECT 2"), ErrorKindConfig, "only one"},
		{"attach not a list", duckCfg("SELECT 1", "attach", "x.duckdb"), ErrorKindConfig, "attach"},
		{"attach both targets", duckCfg("SELECT 1", "attach", []any{map[string]any{"path": "a", "postgres": "b", "alias": "c"}}), ErrorKindConfig, "exactly one"},
		{"attach unknown key", duckCfg("SELECT 1", "attach", []any{map[string]any{"path": "a", "type": "sqlite"}}), ErrorKindConfig, `unknown key "type"`},
		{"attach postgres without alias", duckCfg("SELECT 1", "attach", []any{map[string]any{"postgres": "pg"}}), ErrorKindConfig, "alias"},
		{"attach missing file read-only", duckCfg("SELECT 1", "attach", []any{map[string]any{"path": filepath.Join(t.TempDir(), "none.duckdb"), "read_only": true}}), "duckdb", "attaching file"},
	} {
		e := runErr(t, ctx, tc.cfg)
		if e.Kind != tc.kind || e.Retryable || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s: error = %+v, want non-retryable %s error with %q", tc.name, e, tc.kind, tc.want)
		}
	}
}

// slowDuckQuery runs for minutes unless interrupted.
const slowDuckQuery = `SELECT sum(a.range * b.range) AS s FROM range(1000000) a, range(1000000) b`

func TestDuckDBTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := runErr(t, t.Context(), duckCfg(slowDuckQuery, "timeout", 0.3))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("timeout 0.3s took %s", took)
	}
	if e.Kind != "duckdb" || !e.Retryable || !strings.Contains(e.Message, "timed out after 300ms") {
		t.Fatalf("timeout error = %+v", e)
	}

	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, duckCfg(slowDuckQuery))
		done <- err
	}()
	// No signal tells when DuckDB has started; cancel fires whether the query
	// is being prepared or running, and both must end promptly.
	time.AfterFunc(200*time.Millisecond, func() { cancel(errors.New("lease lost")) })
	select {
	case err := <-done:
		var te *Error
		if !errors.As(err, &te) || te.Kind != ErrorKindCanceled || !te.Retryable || !strings.Contains(te.Message, "lease lost") {
			t.Fatalf("canceled run: %v, want retryable %q naming the cause", err, ErrorKindCanceled)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the query kept running 10s after cancellation")
	}
}

func TestSplitSQL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"SELECT 1", []string{"SELECT 1"}},
		{" SELECT 1 ;\n SELECT 2; ", []string{"SELECT 1", "SELECT 2"}},
		{"SELECT 'a;b', \"c;d\"; SELECT 'it''s;'", []string{"SELECT 'a;b', \"c;d\"", "SELECT 'it''s;'"}},
		{`SELECT E'x\';y'; SELECT 2`, []string{`SELECT E'x\';y'`, "SELECT 2"}},
		{`SELECT 'a\'; SELECT 2`, []string{`SELECT 'a\'`, "SELECT 2"}}, // plain strings have no escapes
		{"SELECT $$a;b$$; SELECT $t$ $$; $t$", []string{"SELECT $$a;b$$", "SELECT $t$ $$; $t$"}},
		{"SELECT $1; SELECT a$b", []string{"SELECT $1", "SELECT a$b"}},
		{"SELECT 1 -- x; y\n; /* a /* nested; */ still; */ SELECT 2", []string{"SELECT 1 -- x; y", "/* a /* nested; */ still; */ SELECT 2"}},
		{"-- only\n; /* comments */ ;;", nil},
		{"\v\u00a0;\t", nil},
		{"SELECT 'unterminated;", []string{"SELECT 'unterminated;"}},
	} {
		if got := splitSQL(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitSQL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzSplitSQL checks the splitter never panics and yields only non-blank
// pieces of its input.
func FuzzSplitSQL(f *testing.F) {
	for _, s := range []string{"SELECT 1; SELECT 2", "'a;b'", "$$;$$", "/* ; */", "E'\\';'", "-- ;\n;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, stmt := range splitSQL(s) {
			if strings.TrimSpace(stmt) == "" || !strings.Contains(s, stmt) {
				t.Fatalf("splitSQL(%q) produced %q, not a non-blank piece of the input", s, stmt)
			}
		}
	})
}

// A list of scripts (NoETL's `commands:`, renamed to query by the parser)
// runs in order, as one script would.
func TestDuckDBQueryList(t *testing.T) {
	t.Parallel()
	res := runOK(t, t.Context(), duckCfg("", "query", []any{
		"CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1)",
		"INSERT INTO t VALUES (2)",
		"SELECT sum(n) AS s FROM t",
	}))
	if got, want := res["rows"], []any{map[string]any{"s": int64(3)}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("rows = %#v, want %#v", got, want)
	}
	if _, err := Run(t.Context(), duckCfg("", "query", []any{"SELECT 1", 2})); err == nil || !strings.Contains(err.Error(), "item 1 must be a SQL string") {
		t.Fatalf("a non-string item: error = %v", err)
	}
}
