package tools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/millrace/millrace/internal/wait"
)

// defaultTestDatabaseURL is the local PostgreSQL the tests run against.
const defaultTestDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func testDatabaseURL() string {
	if u := os.Getenv("MILLRACE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return defaultTestDatabaseURL
}

// credEnv is the worker seam: it serves credentials from a map.
type credEnv map[string]map[string]any

func (e credEnv) Credential(_ context.Context, name string) (map[string]any, error) {
	c, ok := e[name]
	if !ok {
		return nil, fmt.Errorf("credential %q not found", name)
	}
	return c, nil
}

func (credEnv) RunPlaybook(context.Context, ChildRequest) (any, error) {
	return nil, errors.New("credEnv runs no playbooks")
}

type pgBundle struct {
	ctx    context.Context // carries a credEnv with credential "pg"
	admin  *pgx.Conn       // a separate session for checking the tool's work
	schema string          // this test's own schema, dropped at cleanup
	url    string          // connection URL with search_path = schema
}

// pgSetup gives a test its own schema, and a credential "pg" whose
// search_path points at it, so tests never see each other's tables.
func pgSetup(t *testing.T) *pgBundle {
	t.Helper()
	base := testDatabaseURL()
	admin, err := pgx.Connect(t.Context(), base)
	if err != nil {
		t.Fatalf("connect to %s (set MILLRACE_TEST_DATABASE_URL to another server): %v", base, err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	schema := "tools_" + randHex(t)
	if _, err := admin.Exec(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema) // pgx sends unknown URL parameters as session settings
	u.RawQuery = q.Encode()
	b := &pgBundle{admin: admin, schema: schema, url: u.String()}
	b.ctx = WithEnv(t.Context(), credEnv{"pg": {"url": b.url}})
	return b
}

func randHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func pgCfg(command string, extra ...any) map[string]any {
	cfg := map[string]any{"kind": "postgres", "auth": "pg", "command": command}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i].(string)] = extra[i+1]
	}
	return cfg
}

func (b *pgBundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := b.admin.QueryRow(t.Context(), "SELECT count(*) FROM "+b.schema+"."+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPostgresScriptReturnsLastRows(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	res := runOK(t, b.ctx, pgCfg(`
		CREATE TABLE users (id int PRIMARY KEY, name text, age int);
		INSERT INTO users VALUES (1, 'Alice', 30), (2, 'Bob', 25), (3, 'Charlie; Jr', 35);
		SELECT name, age FROM users WHERE age >= 30 ORDER BY age;
		UPDATE users SET age = age + 1 WHERE id = 2;
		-- a trailing comment is not a statement
	`))
	want := map[string]any{
		"columns": []any{"name", "age"},
		"rows": []any{
			map[string]any{"name": "Alice", "age": int64(30)},
			map[string]any{"name": "Charlie; Jr", "age": int64(35)},
		},
		"row_count":     2,
		"rows_affected": int64(4), // 3 inserted + 1 updated; the SELECT is not counted
	}
	// Each statement's own result, for NoETL's command_<i>.
	stmt := func(cols []any, rows []any, affected int64) any {
		if rows == nil {
			rows = []any{}
		}
		return map[string]any{"columns": cols, "rows": rows, "row_count": len(rows), "rows_affected": affected}
	}
	want["statements"] = []any{
		stmt([]any{}, nil, 0),
		stmt([]any{}, nil, 3),
		stmt(want["columns"].([]any), want["rows"].([]any), 0),
		stmt([]any{}, nil, 1),
	}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("result = %#v\nwant %#v", res, want)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatalf("result is not JSON-encodable: %v", err)
	}

	// RETURNING counts as returning rows; a later DDL does not replace them.
	res = runOK(t, b.ctx, pgCfg(`INSERT INTO users VALUES (4, 'Dana', 41) RETURNING id; CREATE INDEX ON users (age)`))
	if got := res["rows"]; !reflect.DeepEqual(got, []any{map[string]any{"id": int64(4)}}) {
		t.Fatalf("rows = %v, want the RETURNING row", got)
	}

	// Only writes: no rows, no columns, but the affected count.
	res = runOK(t, b.ctx, pgCfg(`DELETE FROM users WHERE age > 30`))
	if res["row_count"] != 0 || res["rows_affected"] != int64(2) || len(res["rows"].([]any)) != 0 || len(res["columns"].([]any)) != 0 {
		t.Fatalf("delete result = %v, want 0 rows and 2 affected (Charlie, Dana)", res)
	}
}

func TestPostgresScriptIsOneTransaction(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	runOK(t, b.ctx, pgCfg(`CREATE TABLE t (id int)`))
	e := runErr(t, b.ctx, pgCfg(`INSERT INTO t VALUES (1); INSERT INTO missing_table VALUES (2)`))
	if e.Kind != "postgres" || e.Retryable {
		t.Fatalf("error = %+v, want non-retryable postgres", e)
	}
	for _, want := range []string{`relation "missing_table" does not exist`, "SQLSTATE 42P01"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q does not contain %q", e.Message, want)
		}
	}
	if n := b.count(t, "t"); n != 0 {
		t.Fatalf("t has %d rows after the failed script, want 0: the first INSERT must roll back", n)
	}
}

func TestPostgresParams(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	runOK(t, b.ctx, pgCfg(`CREATE TABLE items (id bigint, name text, price numeric, tags jsonb, note text)`))
	// Params arrive as decoded JSON: json.Number, float64, strings, maps, nil.
	res := runOK(t, b.ctx, pgCfg(`INSERT INTO items VALUES ($1, $2, $3, $4, $5) RETURNING id, name`,
		"params", []any{json.Number("9007199254740993"), "widget", 2.5, map[string]any{"color": "red"}, nil}))
	if got := res["rows"]; !reflect.DeepEqual(got, []any{map[string]any{"id": int64(9007199254740993), "name": "widget"}}) {
		t.Fatalf("rows = %v", got)
	}
	if res["rows_affected"] != int64(1) {
		t.Fatalf("rows_affected = %v, want 1", res["rows_affected"])
	}
	res = runOK(t, b.ctx, pgCfg(`SELECT price, tags, note FROM items WHERE id = $1 AND name = $2`,
		"params", []any{9007199254740993.0 - 1, "widget"})) // float64 rounds to ...992
	if res["row_count"] != 0 {
		t.Fatalf("id ...992 matched %v", res["rows"])
	}
	res = runOK(t, b.ctx, pgCfg(`SELECT price, tags, note FROM items WHERE name = $1`, "params", []any{"widget"}))
	want := []any{map[string]any{"price": 2.5, "tags": map[string]any{"color": "red"}, "note": nil}}
	if !reflect.DeepEqual(res["rows"], want) {
		t.Fatalf("rows = %#v, want %#v", res["rows"], want)
	}

	// A script cannot take params: the server says so.
	e := runErr(t, b.ctx, pgCfg(`SELECT $1; SELECT 2`, "params", []any{1.0}))
	if e.Kind != "postgres" || e.Retryable || !strings.Contains(e.Message, "multiple commands") {
		t.Fatalf("error = %+v, want non-retryable 'multiple commands'", e)
	}
	e = runErr(t, b.ctx, pgCfg(`SELECT 1`, "params", "x"))
	if e.Kind != ErrorKindConfig || !strings.Contains(e.Message, "params") {
		t.Fatalf("error = %+v, want config error about params", e)
	}
}

func TestPostgresTypes(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	query := `SELECT 7::int2 AS i2, 42::int AS i4, 9007199254740993::int8 AS i8,
		1.5::float8 AS f8, 0.25::float4 AS f4, 'NaN'::float8 AS nan,
		'text ü'::text AS txt, 'v'::varchar(3) AS vc, true AS yes, false AS no, NULL::int AS nothing,
		'2024-01-02 03:04:05.123+02'::timestamptz AS tstz, '2024-01-02 03:04:05'::timestamp AS ts,
		'infinity'::timestamp AS inf, '2024-01-02'::date AS d,
		12.50::numeric AS num, 12345678901234567890.123::numeric AS bignum, 'NaN'::numeric AS numnan,
		'{"a": [1, 2.5], "id": 12345678901234567890}'::jsonb AS jb, '[true, null]'::json AS js,
		'\x0001ff'::bytea AS bin, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id,
		ARRAY[1, 2, 3] AS arr, ARRAY['x', NULL] AS tarr, '1 day 02:00:00'::interval AS iv`
	want := map[string]any{
		"i2": int64(7), "i4": int64(42), "i8": int64(9007199254740993),
		"f8": 1.5, "f4": 0.25, "nan": "NaN",
		"txt": "text ü", "vc": "v", "yes": true, "no": false, "nothing": nil,
		"tstz": "2024-01-02T01:04:05.123Z", "ts": "2024-01-02T03:04:05Z",
		"inf": "infinity", "d": "2024-01-02",
		"num": 12.5, "bignum": "12345678901234567890.123", "numnan": "NaN",
		"jb":  map[string]any{"a": []any{json.Number("1"), json.Number("2.5")}, "id": json.Number("12345678901234567890")},
		"js":  []any{true, nil},
		"bin": "AAH/", "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"arr": []any{int64(1), int64(2), int64(3)}, "tarr": []any{"x", nil}, "iv": "1 day 02:00:00",
	}
	// The simple protocol (no params) and the extended one (params) agree.
	for name, cfg := range map[string]map[string]any{
		"script": pgCfg(query),
		"params": pgCfg(query+`, $1::text AS p`, "params", []any{"param"}),
	} {
		res := runOK(t, b.ctx, cfg)
		rows := res["rows"].([]any)
		if len(rows) != 1 {
			t.Fatalf("%s: rows = %v", name, rows)
		}
		row := rows[0].(map[string]any)
		if name == "params" {
			if row["p"] != "param" {
				t.Errorf("params: p = %v", row["p"])
			}
			delete(row, "p")
		}
		for k, w := range want {
			if !reflect.DeepEqual(row[k], w) {
				t.Errorf("%s: %s = %#v (%T), want %#v (%T)", name, k, row[k], row[k], w, w)
			}
		}
		if len(row) != len(want) {
			t.Errorf("%s: row has %d columns, want %d", name, len(row), len(want))
		}
		if _, err := json.Marshal(res); err != nil {
			t.Errorf("%s: result is not JSON-encodable: %v", name, err)
		}
	}
}

func TestPostgresRetryableErrors(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	raise := func(code string) string {
		return fmt.Sprintf(`DO $$ BEGIN RAISE EXCEPTION 'raised %s' USING ERRCODE = '%s'; END $$`, code, code)
	}
	for _, tc := range []struct {
		sql       string
		retryable bool
		want      string
	}{
		{raise("40001"), true, "SQLSTATE 40001"},
		{raise("40P01"), true, "SQLSTATE 40P01"},
		{raise("22012"), false, "SQLSTATE 22012"},
		{`SELECT 1/0`, false, "division by zero"},
		{`SELEC 1`, false, "syntax error"},
		// The server ends the session (57P01) as an operator would.
		{`SELECT pg_terminate_backend(pg_backend_pid())`, true, "57P01"},
	} {
		e := runErr(t, b.ctx, pgCfg(tc.sql))
		if e.Kind != "postgres" || e.Retryable != tc.retryable || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s: error = %+v, want kind postgres, retryable %v, message with %q", tc.sql, e, tc.retryable, tc.want)
		}
	}
}

func TestPostgresCredentials(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	u, err := url.Parse(testDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	fields := map[string]any{
		"host": u.Hostname(), "port": json.Number(u.Port()), "username": u.User.Username(),
		"password": pw, "dbname": strings.TrimPrefix(u.Path, "/"), "sslmode": "disable",
	}
	if u.Port() == "" {
		delete(fields, "port") // the tool's default, 5432
	}
	env := credEnv{"fields": fields, "nohost": {"user": "postgres"}, "badurl": {"url": 5.0}}
	ctx := WithEnv(t.Context(), env)

	res := runOK(t, ctx, pgCfg(`SELECT current_database() AS db, current_user AS who`, "auth", "fields"))
	row := res["rows"].([]any)[0].(map[string]any)
	if row["db"] != fields["dbname"] || row["who"] != u.User.Username() {
		t.Fatalf("connected as %v, want %v", row, fields)
	}
	// "connection" is the development shortcut around credentials.
	res = runOK(t, t.Context(), map[string]any{"kind": "postgres", "connection": b.url, "command": "SELECT current_schema() AS s"})
	if got := res["rows"].([]any)[0].(map[string]any)["s"]; got != b.schema {
		t.Fatalf("current_schema = %v, want %s", got, b.schema)
	}

	for _, tc := range []struct {
		name string
		ctx  context.Context
		cfg  map[string]any
		kind string
		want string
	}{
		{"unknown credential", ctx, pgCfg("SELECT 1", "auth", "nope"), "postgres", `credential "nope"`},
		{"no credential store", t.Context(), pgCfg("SELECT 1"), "postgres", "no credential store"},
		{"credential without host", ctx, pgCfg("SELECT 1", "auth", "nohost"), "postgres", "has no host"},
		{"credential url not a string", ctx, pgCfg("SELECT 1", "auth", "badurl"), "postgres", `field "url"`},
		{"neither auth nor connection", ctx, map[string]any{"kind": "postgres", "command": "SELECT 1"}, ErrorKindConfig, "auth"},
		{"both auth and connection", ctx, pgCfg("SELECT 1", "connection", b.url), ErrorKindConfig, "one of them"},
		{"no command", ctx, pgCfg("  "), ErrorKindConfig, "command"},
		{"bad timeout", ctx, pgCfg("SELECT 1", "timeout", -1.0), ErrorKindConfig, "timeout"},
	} {
		e := runErr(t, tc.ctx, tc.cfg)
		if e.Kind != tc.kind || e.Retryable || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s: error = %+v, want non-retryable %s error with %q", tc.name, e, tc.kind, tc.want)
		}
	}

	// Nothing listens on port 1: a connection error, worth retrying, and
	// the message keeps the password out.
	e := runErr(t, t.Context(), map[string]any{"kind": "postgres", "command": "SELECT 1",
		"connection": "postgres://postgres:s3cret@127.0.0.1:1/test?sslmode=disable&connect_timeout=5"})
	if e.Kind != "postgres" || !e.Retryable || !strings.Contains(e.Message, "connecting to 127.0.0.1:1/test") {
		t.Fatalf("refused connection: error = %+v, want retryable postgres error naming the server", e)
	}
	if strings.Contains(e.Message, "s3cret") {
		t.Fatalf("message leaks the password: %q", e.Message)
	}
}

// activeQueries counts sessions running a query that contains marker.
func (b *pgBundle) activeQueries(t *testing.T, marker string) int {
	t.Helper()
	var n int
	err := b.admin.QueryRow(t.Context(),
		`SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`,
		marker).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitQueries polls until activeQueries(marker) == want.
func (b *pgBundle) waitQueries(t *testing.T, marker string, want int) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		if n := b.activeQueries(t, marker); n != want {
			return fmt.Errorf("still %d sessions running %s, want %d", n, marker, want)
		}
		return nil
	})
}

func TestPostgresCancelStopsServerQuery(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	marker := "cancel_" + randHex(t)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	done := make(chan *Error, 1)
	go func() {
		_, err := Run(ctx, pgCfg("SELECT pg_sleep(30) -- "+marker))
		var te *Error
		errors.As(err, &te)
		done <- te
	}()
	b.waitQueries(t, marker, 1)
	canceled := time.Now()
	cancel()
	var e *Error
	select {
	case e = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the tool did not return within 10s of cancellation")
	}
	if took := time.Since(canceled); took > 5*time.Second {
		t.Errorf("returned %s after cancellation, want promptly", took)
	}
	if e == nil || e.Kind != ErrorKindCanceled || !e.Retryable {
		t.Fatalf("error = %+v, want retryable %q", e, ErrorKindCanceled)
	}
	b.waitQueries(t, marker, 0) // the server stopped it too
}

func TestPostgresTimeout(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	marker := "timeout_" + randHex(t)
	start := time.Now()
	e := runErr(t, b.ctx, pgCfg("SELECT pg_sleep(30) -- "+marker, "timeout", 0.5))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("timeout 0.5s took %s", took)
	}
	if e.Kind != "postgres" || !e.Retryable || !strings.Contains(e.Message, "timed out after 500ms") {
		t.Fatalf("error = %+v, want retryable postgres timeout", e)
	}
	b.waitQueries(t, marker, 0)
}

func TestSQLToolKinds(t *testing.T) {
	t.Parallel()
	kinds := Kinds()
	for kind, want := range map[string][]string{
		"postgres": {"auth", "command", "connection", "params", "timeout"},
		"duckdb":   {"attach", "auth", "command", "database", "gcs_credential", "query", "timeout"},
	} {
		if !reflect.DeepEqual(kinds[kind], want) {
			t.Errorf("Kinds()[%q] = %v, want %v", kind, kinds[kind], want)
		}
	}
}

// A list of commands (NoETL's `commands:`/`queries:`) runs in order on one
// connection; the result reads as if they were one script.
func TestPostgresCommandList(t *testing.T) {
	t.Parallel()
	b := pgSetup(t)
	res := runOK(t, b.ctx, pgCfg("", "command", []any{
		"CREATE TABLE seq (n int)",
		"INSERT INTO seq VALUES (1), (2)",
		"SELECT n FROM seq ORDER BY n",
		"INSERT INTO seq SELECT max(n) + 1 FROM seq",
	}))
	if got, want := res["rows"], []any{map[string]any{"n": int64(1)}, map[string]any{"n": int64(2)}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("rows = %v, want %v", got, want)
	}
	if got := res["rows_affected"]; got != int64(3) {
		t.Fatalf("rows_affected = %v, want 3", got)
	}
	if n := b.count(t, "seq"); n != 3 {
		t.Fatalf("seq has %d rows, want 3: the commands ran out of order or not at all", n)
	}

	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{pgCfg("", "command", []any{"SELECT 1", 2}), `item 1 must be a SQL string`},
		{pgCfg("", "command", []any{" "}), `is required`},
		{pgCfg("", "command", []any{"SELECT $1", "SELECT 2"}, "params", []any{1}), `needs a single command`},
		{pgCfg("", "command", []any{"SELECT 1", "SELECT nope"}), `running command 2 of 2`},
	} {
		_, err := Run(b.ctx, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%v) error = %v, want one containing %q", tc.cfg["command"], err, tc.want)
		}
	}
}
