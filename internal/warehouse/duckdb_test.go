//go:build cgo

package warehouse

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openDuck(t *testing.T, url string) Driver {
	t.Helper()
	d, err := Open(t.Context(), Conn{Type: TypeDuckDB, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDuckDBTypes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := openDuck(t, DuckDBMemory)
	r := mustQuery(t, ctx, d, `SELECT 1::TINYINT AS ti, 9007199254740993::BIGINT AS bi, 170141183460469231731687303715884105727::HUGEINT AS hi,
		1.5::FLOAT AS f, 0.1::DOUBLE AS db, 12.25::DECIMAL(10,2) AS dec, 1234567890123.4567::DECIMAL(18,4) AS dec_big,
		true AS b, 'héllo' AS s, TIMESTAMP '2024-03-01 12:34:56.789' AS ts, TIMESTAMPTZ '2024-03-01 12:34:56+02' AS tstz,
		DATE '2024-03-01' AS d, TIME '13:14:15' AS tm, '\x00\xFF'::BLOB AS bl,
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID AS u, [1, NULL, 3] AS li, {'a': 1, 'b': 'x'} AS st,
		NULL::INTEGER AS nul`)
	checkColumns(t, r.columns, []Column{
		{"ti", TypeInteger, "TINYINT"}, {"bi", TypeInteger, "BIGINT"}, {"hi", TypeInteger, "HUGEINT"},
		{"f", TypeNumber, "FLOAT"}, {"db", TypeNumber, "DOUBLE"}, {"dec", TypeNumber, "DECIMAL(10,2)"},
		{"dec_big", TypeNumber, "DECIMAL(18,4)"}, {"b", TypeBoolean, "BOOLEAN"}, {"s", TypeString, "VARCHAR"},
		{"ts", TypeTimestamp, "TIMESTAMP"}, {"tstz", TypeTimestamp, "TIMESTAMPTZ"}, {"d", TypeDate, "DATE"},
		{"tm", TypeString, "TIME"}, {"bl", TypeBytes, "BLOB"}, {"u", TypeString, "UUID"},
		{"li", TypeJSON, "INTEGER[]"}, {"st", TypeJSON, `STRUCT("a" INTEGER, "b" VARCHAR)`}, {"nul", TypeInteger, "INTEGER"},
	})
	if len(r.rows) != 1 {
		t.Fatalf("%d rows", len(r.rows))
	}
	checkRow(t, r.columns, r.rows[0], []any{
		int64(1), int64(9007199254740993), "170141183460469231731687303715884105727",
		1.5, 0.1, 12.25, "1234567890123.4567",
		true, "héllo", "2024-03-01T12:34:56.789Z", "2024-03-01T10:34:56Z",
		"2024-03-01", "13:14:15", "AP8=",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", []any{int64(1), nil, int64(3)}, map[string]any{"a": int64(1), "b": "x"},
		nil,
	})
}

func TestDuckDBMemoryAndFile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	// One in-memory database per driver, kept across its queries.
	mem := openDuck(t, DuckDBMemory)
	mustQuery(t, ctx, mem, "CREATE TABLE kept AS SELECT range AS n FROM range(5)")
	if r := mustQuery(t, ctx, mem, "SELECT sum(n) AS s FROM kept"); r.rows[0][0] != 10.0 && r.rows[0][0] != int64(10) {
		t.Fatalf("sum = %#v", r.rows[0][0])
	}
	other := openDuck(t, DuckDBMemory)
	if _, err := query(ctx, other, "SELECT * FROM kept"); err == nil {
		t.Fatal("a second :memory: driver sees the first one's tables")
	}

	// A file database keeps its data across drivers.
	path := filepath.Join(t.TempDir(), "analytics.duckdb")
	d := openDuck(t, path)
	mustQuery(t, ctx, d, "CREATE TABLE events AS SELECT range AS id, 'e' || range AS name FROM range(1000)")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openDuck(t, path)
	r := mustQuery(t, ctx, d2, "SELECT id, name FROM events ORDER BY id")
	if len(r.rows) != 1000 || r.rows[999][0] != int64(999) || r.rows[999][1] != "e999" {
		t.Fatalf("%d rows, last %v", len(r.rows), r.rows[len(r.rows)-1])
	}
	checkColumns(t, r.columns, []Column{{"id", TypeInteger, "BIGINT"}, {"name", TypeString, "VARCHAR"}})
}

func TestDuckDBErrorsAndCancel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := openDuck(t, DuckDBMemory)
	_, err := query(ctx, d, "SELECT * FROM nope")
	var whErr *Error
	if !errors.As(err, &whErr) || !strings.Contains(whErr.Message, "Table with name nope does not exist") || whErr.Code != "catalog" {
		t.Fatalf("missing table: %#v (%v)", whErr, err)
	}
	_, err = query(ctx, d, "SELEC 1")
	if !errors.As(err, &whErr) || !strings.Contains(whErr.Message, `syntax error at or near "SELEC"`) {
		t.Fatalf("syntax error: %#v (%v)", whErr, err)
	}

	// A callback's error is returned as is.
	stop := errors.New("disk full")
	if err := d.Query(ctx, "SELECT * FROM range(10)", func([]Column) error { return nil }, func([]any) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}

	// Cancelling interrupts a query that would run for minutes.
	qctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := query(qctx, d, "SELECT count(*) FROM range(1000000000000) t(a) WHERE a % 7 = 3")
		done <- err
	}()
	time.AfterFunc(300*time.Millisecond, cancel)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled query returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("DuckDB query did not stop after cancel")
	}
	if r := mustQuery(t, ctx, d, "SELECT 1 AS x"); r.rows[0][0] != int64(1) {
		t.Fatalf("after cancel: %v", r.rows)
	}
}
