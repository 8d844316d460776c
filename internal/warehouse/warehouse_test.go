package warehouse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/millrace/millrace/internal/wait"
)

// defaultTestDatabaseURL is the PostgreSQL the tests run against unless
// MILLRACE_TEST_DATABASE_URL says otherwise.
const defaultTestDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

type testBundle struct {
	ctx   context.Context
	url   string
	pg    Driver        // the driver under test
	admin *pgxpool.Pool // a separate connection for setup and pg_stat_activity
	name  string        // unique per test, for tables and query markers
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	url := os.Getenv("MILLRACE_TEST_DATABASE_URL")
	if url == "" {
		url = defaultTestDatabaseURL
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := admin.Ping(ctx); err != nil {
		t.Fatalf("PostgreSQL at %s is not reachable (set MILLRACE_TEST_DATABASE_URL): %v", url, err)
	}
	pg, err := Open(ctx, Conn{Type: TypePostgres, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	var suffix [4]byte
	rand.Read(suffix[:])
	return &testBundle{ctx: ctx, url: url, pg: pg, admin: admin, name: "wh_" + hex.EncodeToString(suffix[:])}
}

// table creates a table unique to the test and drops it at cleanup.
func (b *testBundle) table(t *testing.T, columns string) string {
	t.Helper()
	name := b.name + "_t"
	if _, err := b.admin.Exec(b.ctx, fmt.Sprintf("CREATE TABLE %s (%s)", name, columns)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.admin.Exec(context.Background(), "DROP TABLE IF EXISTS "+name) })
	return name
}

// result is everything a query delivered.
type result struct {
	columns     []Column
	rows        [][]any
	columnCalls int
}

func query(ctx context.Context, d Driver, sql string) (*result, error) {
	r := &result{}
	err := d.Query(ctx, sql, func(c []Column) error {
		r.columns = c
		r.columnCalls++
		return nil
	}, func(row []any) error {
		if r.columnCalls != 1 {
			return fmt.Errorf("row before columns")
		}
		r.rows = append(r.rows, append([]any(nil), row...))
		return nil
	})
	return r, err
}

func mustQuery(t *testing.T, ctx context.Context, d Driver, sql string) *result {
	t.Helper()
	r, err := query(ctx, d, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if r.columnCalls != 1 {
		t.Fatalf("%s: onColumns called %d times", sql, r.columnCalls)
	}
	return r
}

func checkColumns(t *testing.T, got []Column, want []Column) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("columns:\n got %v\nwant %v", got, want)
	}
}

func checkRow(t *testing.T, cols []Column, got, want []any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("row has %d values, want %d: %#v", len(got), len(want), got)
	}
	for i := range want {
		if fmt.Sprintf("%T %v", got[i], got[i]) != fmt.Sprintf("%T %v", want[i], want[i]) {
			t.Errorf("column %s = %T %v, want %T %v", cols[i].Name, got[i], got[i], want[i], want[i])
		}
	}
}

func TestPostgresTypes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tbl := b.table(t, `i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
		n_exact numeric(10,2), n_big numeric, b boolean, s text, vc varchar(10), ts timestamp, tstz timestamptz,
		d date, tm time, j jsonb, by bytea, u uuid, ia integer[], ta text[], iv interval`)
	_, err := b.admin.Exec(b.ctx, `INSERT INTO `+tbl+` VALUES (
		-2, 40000, 9007199254740993, 1.5, 0.1,
		12.25, 123456789012345678901234567890.123, true, 'héllo "x"', 'v', '2024-03-01 12:34:56.789',
		'2024-03-01 12:34:56.123456+02', '2024-03-01', '13:14:15', '{"a":[1,2],"big":9007199254740993}', '\x00ff10',
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', '{"a","b c"}', '1 day 02:00:00'),
		(NULL, NULL, NULL, 'NaN', '-Infinity', NULL, NULL, NULL, NULL, NULL, 'infinity', NULL,
		NULL, NULL, 'null', NULL, NULL, NULL, NULL, NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	r := mustQuery(t, b.ctx, b.pg, "SELECT * FROM "+tbl+" ORDER BY i2 NULLS LAST")
	checkColumns(t, r.columns, []Column{
		{"i2", TypeInteger, "int2"}, {"i4", TypeInteger, "int4"}, {"i8", TypeInteger, "int8"},
		{"f4", TypeNumber, "float4"}, {"f8", TypeNumber, "float8"},
		{"n_exact", TypeNumber, "numeric"}, {"n_big", TypeNumber, "numeric"}, {"b", TypeBoolean, "bool"},
		{"s", TypeString, "text"}, {"vc", TypeString, "varchar"}, {"ts", TypeTimestamp, "timestamp"},
		{"tstz", TypeTimestamp, "timestamptz"}, {"d", TypeDate, "date"}, {"tm", TypeString, "time"},
		{"j", TypeJSON, "jsonb"}, {"by", TypeBytes, "bytea"}, {"u", TypeString, "uuid"},
		{"ia", TypeJSON, "_int4"}, {"ta", TypeJSON, "_text"}, {"iv", TypeString, "interval"},
	})
	if len(r.rows) != 2 {
		t.Fatalf("%d rows", len(r.rows))
	}
	checkRow(t, r.columns, r.rows[0], []any{
		int64(-2), int64(40000), int64(9007199254740993), 1.5, 0.1,
		12.25, "123456789012345678901234567890.123", true, `héllo "x"`, "v", "2024-03-01T12:34:56.789Z",
		"2024-03-01T10:34:56.123456Z", "2024-03-01", "13:14:15", map[string]any{"a": []any{"1", "2"}, "big": "9007199254740993"},
		"AP8Q", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", []any{int64(1), nil, int64(3)}, []any{"a", "b c"}, "1 day 02:00:00",
	})
	checkRow(t, r.columns, r.rows[1], []any{
		nil, nil, nil, "NaN", "-Infinity", nil, nil, nil, nil, nil, "infinity", nil,
		nil, nil, nil, nil, nil, nil, nil, nil,
	})

	// A statement without a result still reports its (empty) columns.
	r = mustQuery(t, b.ctx, b.pg, "UPDATE "+tbl+" SET i2 = i2")
	if len(r.columns) != 0 || len(r.rows) != 0 {
		t.Fatalf("UPDATE gave %v, %v", r.columns, r.rows)
	}
	r = mustQuery(t, b.ctx, b.pg, "SELECT 1 AS a WHERE false")
	checkColumns(t, r.columns, []Column{{"a", TypeInteger, "int4"}})
	if len(r.rows) != 0 {
		t.Fatalf("rows: %v", r.rows)
	}
}

// TestPostgresStreamsRows reads 100,000 rows of about 200 bytes (20 MB)
// and checks that the live heap stays small while they stream. Not
// parallel: it measures the process heap.
func TestPostgresStreamsRows(t *testing.T) {
	b := setup(t)
	const total = 100_000
	const maxGrowth = 4 << 20
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := int64(ms.HeapAlloc)
	var next, peak int64
	err := b.pg.Query(b.ctx, fmt.Sprintf("SELECT g AS n, repeat('x', 200) AS pad FROM generate_series(0, %d) g", total-1),
		func(c []Column) error { return nil },
		func(row []any) error {
			if row[0] != next || len(row[1].(string)) != 200 {
				return fmt.Errorf("row %d = %v", next, row[0])
			}
			next++
			if next%10_000 == 0 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				peak = max(peak, int64(ms.HeapAlloc)-base)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if next != total {
		t.Fatalf("got %d rows, want %d", next, total)
	}
	t.Logf("peak live heap growth while streaming %d rows: %d KB", total, peak>>10)
	if peak > maxGrowth {
		t.Fatalf("live heap grew by %d bytes while streaming, want under %d: rows are being held", peak, maxGrowth)
	}
}

func TestPostgresErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct{ sql, message, code string }{
		{"SELECT * FROM nope_" + b.name, `relation "nope_` + b.name + `" does not exist`, "42P01"},
		{"SELEC 1", `syntax error at or near "SELEC"`, "42601"},
		{"SELECT 1/0", "division by zero", "22012"},
		{"SELECT 1; SELECT 2", "cannot insert multiple commands into a prepared statement", "42601"},
	} {
		_, err := query(b.ctx, b.pg, tc.sql)
		var whErr *Error
		if !errors.As(err, &whErr) || whErr.Message != tc.message || whErr.Code != tc.code || whErr.Retryable {
			t.Errorf("%s: got %#v (%v), want message %q code %s", tc.sql, whErr, err, tc.message, tc.code)
		}
	}
	// The driver is still usable after errors.
	if r := mustQuery(t, b.ctx, b.pg, "SELECT 42 AS x"); r.rows[0][0] != int64(42) {
		t.Fatalf("after errors: %v", r.rows)
	}

	// A callback's error is returned as is.
	stop := errors.New("disk full")
	err := b.pg.Query(b.ctx, "SELECT g FROM generate_series(1, 100000) g", func([]Column) error { return nil },
		func([]any) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
	if r := mustQuery(t, b.ctx, b.pg, "SELECT 43 AS x"); r.rows[0][0] != int64(43) {
		t.Fatalf("after a callback error: %v", r.rows)
	}

	// A warehouse that is not there is a retryable error naming it.
	down, err := Open(b.ctx, Conn{Type: TypePostgres, URL: "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5"})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	_, err = query(b.ctx, down, "SELECT 1")
	var whErr *Error
	if !errors.As(err, &whErr) || !whErr.Retryable || !strings.Contains(whErr.Message, "127.0.0.1:1/test") {
		t.Fatalf("unreachable warehouse: %#v (%v)", whErr, err)
	}
}

// activeQueries counts running queries of this test's driver that contain
// marker.
func (b *testBundle) activeQueries(t *testing.T, marker string) int {
	t.Helper()
	var n int
	err := b.admin.QueryRow(b.ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND state = 'active' AND query LIKE '%' || $2 || '%'`,
		PostgresApplicationName, marker).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPostgresCancelStopsTheQuery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	marker := "cancel_" + b.name
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	started := time.Now()
	go func() {
		_, err := query(ctx, b.pg, "SELECT pg_sleep(30) /* "+marker+" */")
		done <- err
	}()
	wait.Until(t, 10*time.Second, "the query to run in PostgreSQL", func() bool { return b.activeQueries(t, marker) == 1 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled query returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Query did not return after its context was cancelled")
	}
	// The backend stopped executing by the time Query returned.
	if n := b.activeQueries(t, marker); n != 0 {
		t.Fatalf("pg_stat_activity still shows %d running queries after cancel", n)
	}
	if elapsed := time.Since(started); elapsed > 20*time.Second {
		t.Fatalf("cancel took %s: the query ran to completion", elapsed)
	}
	// The pooled connection is reusable.
	if r := mustQuery(t, b.ctx, b.pg, "SELECT 1 AS x"); r.rows[0][0] != int64(1) {
		t.Fatalf("after cancel: %v", r.rows)
	}
}

func TestPostgresConcurrentQueries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 20
	marker := "conc_" + b.name
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := query(ctx, b.pg, "SELECT pg_sleep(30) /* "+marker+" */")
			errs <- err
		}()
	}
	// All run at once, each on its own pooled connection.
	wait.Until(t, 20*time.Second, fmt.Sprintf("%d queries running at once", n), func() bool { return b.activeQueries(t, marker) == n })
	cancel()
	for range n {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled query: %v", err)
		}
	}
	wait.Until(t, 10*time.Second, "no queries left running", func() bool { return b.activeQueries(t, marker) == 0 })
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if got := strings.Join(Types(), ","); !strings.Contains(got, "duckdb,postgres") {
		t.Fatalf("Types() = %s", got)
	}
	_, err := Open(ctx, Conn{Type: "oracle", URL: "x"})
	if err == nil || !strings.Contains(err.Error(), `unknown warehouse type "oracle"`) || !strings.Contains(err.Error(), "duckdb, postgres") {
		t.Fatalf("unknown type: %v", err)
	}
	for _, tc := range []struct {
		conn Conn
		ok   bool
	}{
		{Conn{TypePostgres, "postgres://u:p@h:5432/db?sslmode=require"}, true},
		{Conn{TypePostgres, "postgresql://h/db"}, true},
		{Conn{TypePostgres, ""}, false},
		{Conn{TypePostgres, "host=h dbname=db"}, false},
		{Conn{TypePostgres, "postgres://h:notaport/db"}, false},
		{Conn{TypeDuckDB, ":memory:"}, true},
		{Conn{TypeDuckDB, "/data/x.duckdb"}, true},
		{Conn{TypeDuckDB, "x.duckdb?access_mode=read_only"}, true},
		{Conn{TypeDuckDB, "  "}, false},
		{Conn{TypeDuckDB, "s3://bucket/x.duckdb"}, false},
		{Conn{"", "x"}, false},
	} {
		if err := Validate(tc.conn); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.conn, err, tc.ok)
		}
	}
	// Password must not leak into validation errors.
	if err := Validate(Conn{TypePostgres, "postgres://u:s3cret@h:bad/db"}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("bad url error leaks or is missing: %v", err)
	}

	// Another warehouse is one Register call.
	Register("test-constant", func(ctx context.Context, c Conn) (Driver, error) { return constantDriver(c.URL), nil })
	d, err := Open(ctx, Conn{Type: "test-constant", URL: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	r := mustQuery(t, ctx, d, "anything")
	if r.rows[0][0] != "hello" {
		t.Fatalf("custom driver: %v", r.rows)
	}
}

type constantDriver string

func (c constantDriver) Query(_ context.Context, _ string, onColumns func([]Column) error, onRow func([]any) error) error {
	if err := onColumns([]Column{{Name: "v", Type: TypeString}}); err != nil {
		return err
	}
	return onRow([]any{string(c)})
}

func (constantDriver) Close() error { return nil }
