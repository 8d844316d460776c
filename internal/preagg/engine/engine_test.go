//go:build cgo

package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/warehouse"
)

// --- helpers ---------------------------------------------------------------

func natsStore(t *testing.T) *storage.Objects {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := nats.Connect(e.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	o, err := storage.OpenObjects(t.Context(), js, "preagg_engine_test", jetstream.FileStorage, 1)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func dirStore(t *testing.T) *storage.Dir {
	t.Helper()
	d, err := storage.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newEngine(t *testing.T, s storage.Store, cfg Config) *Engine {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	if cfg.MemoryLimit == "" {
		cfg.MemoryLimit = "256MB"
	}
	e, err := New(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// duckWarehouse makes a DuckDB warehouse file seeded by stmts.
func duckWarehouse(t *testing.T, stmts ...string) api.WarehouseConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wh.duckdb")
	db, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return api.WarehouseConn{Type: warehouse.TypeDuckDB, URL: path}
}

// pgWarehouse makes a fresh schema in the test database, seeded by stmts
// (which name it as %[1]s).
func pgWarehouse(t *testing.T, stmts ...string) (api.WarehouseConn, string) {
	t.Helper()
	const url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	schema := fmt.Sprintf("preagg_engine_%d_%d", time.Now().UnixNano(), os.Getpid())
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at 127.0.0.1:5432: %v", err)
	}
	t.Cleanup(func() { db.Exec("DROP SCHEMA " + schema + " CASCADE") })
	for _, s := range stmts {
		s = fmt.Sprintf(s, schema)
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return api.WarehouseConn{Type: warehouse.TypePostgres, URL: url}, schema
}

type result struct {
	cols []warehouse.Column
	rows [][]any
}

func collect(r *result) (func([]warehouse.Column) error, func([]any) error) {
	return func(c []warehouse.Column) error { r.cols = c; return nil },
		func(row []any) error { r.rows = append(r.rows, append([]any(nil), row...)); return nil }
}

func serve(t *testing.T, e *Engine, plan api.ServePlan) (result, error) {
	t.Helper()
	var r result
	oc, or := collect(&r)
	err := e.Serve(t.Context(), plan, oc, or)
	return r, err
}

func mustServe(t *testing.T, e *Engine, out api.BuildComplete, buildUUID, q string) result {
	t.Helper()
	r, err := serve(t, e, api.ServePlan{BuildUUID: buildUUID, Objects: out.Partitions, SQL: q})
	if err != nil {
		t.Fatalf("Serve %s: %v", q, err)
	}
	return r
}

// onWarehouse runs q on the warehouse directly, as a warehouse worker would.
func onWarehouse(t *testing.T, c api.WarehouseConn, q string) result {
	t.Helper()
	drv, err := warehouse.Open(t.Context(), warehouse.Conn{Type: c.Type, URL: c.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	var r result
	oc, or := collect(&r)
	if err := drv.Query(t.Context(), q, oc, or); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

func build(t *testing.T, e *Engine, wh api.WarehouseConn, uuid, q string, mod func(*api.ClaimedBuild)) (api.BuildComplete, error) {
	t.Helper()
	b := api.ClaimedBuild{BuildUUID: uuid, Project: "p", Model: "orders", PreAggregate: "daily", Warehouse: wh,
		Plan: api.BuildPlan{SQL: q}, MaxRows: 1_000_000, ObjectPrefix: "p/orders/daily/" + uuid}
	if mod != nil {
		mod(&b)
	}
	return e.Build(t.Context(), b)
}

func mustBuild(t *testing.T, e *Engine, wh api.WarehouseConn, uuid, q string, mod func(*api.ClaimedBuild)) api.BuildComplete {
	t.Helper()
	out, err := build(t, e, wh, uuid, q, mod)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storeKeys(t *testing.T, d *storage.Dir) []string {
	t.Helper()
	root := strings.TrimPrefix(d.String(), "dir:")
	var keys []string
	filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			rel, _ := filepath.Rel(root, p)
			keys = append(keys, filepath.ToSlash(rel))
		}
		return nil
	})
	return keys
}

// --- round trips -----------------------------------------------------------

const duckTypesTable = `CREATE TABLE t AS SELECT * FROM (VALUES
	(1, 1::INTEGER, 9007199254740993::BIGINT, 12345678901234567890123456789012345678::HUGEINT, 5::HUGEINT, 0.1::DOUBLE, 1.5::FLOAT,
	 12.25::DECIMAL(10,2), 1234567890123.4567::DECIMAL(18,4), true, 'héllo ✓ 日本', DATE '2024-03-01',
	 TIMESTAMP '2024-03-01 12:34:56.789', TIMESTAMPTZ '2024-03-01 12:34:56+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID),
	(2, -7, -1, -1, -9007199254740993, -2.5e300, -0.25, -0.01, 0, false, '', DATE '1999-12-31',
	 TIMESTAMP '1970-01-01 00:00:00', TIMESTAMPTZ '2000-01-01 00:00:00.000001+00', NULL),
	(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
) v(id, i, bi, hi, hs, d, f, dec, dec4, b, s, dt, ts, tstz, u)`

// A DuckDB warehouse's rows come back from the pre-aggregate exactly as
// the warehouse gives them: same columns, types and values.
func TestBuildServeRoundTripDuckDB(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, duckTypesTable)
	for name, s := range map[string]storage.Store{"dir": dirStore(t), "nats": natsStore(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEngine(t, s, Config{})
			out := mustBuild(t, e, wh, "b1", "SELECT * FROM t", nil)
			if len(out.Partitions) != 1 || out.Partitions[0].Key != "" || out.Partitions[0].Rows != 3 || out.Partitions[0].Bytes <= 0 ||
				out.Partitions[0].Object != "p/orders/daily/b1/all.parquet" || out.Partitions[0].BuildUUID != "b1" {
				t.Fatalf("partitions: %+v", out.Partitions)
			}
			if out.DataAsOf == nil || out.DataAsOf.Location() != time.UTC || time.Since(*out.DataAsOf) > time.Hour {
				t.Fatalf("dataAsOf: %v", out.DataAsOf)
			}
			got := mustServe(t, e, out, "b1", "SELECT * FROM preagg ORDER BY id")
			want := onWarehouse(t, wh, "SELECT * FROM t ORDER BY id")
			// Parquet has no HUGEINT: one too wide for BIGINT is a DECIMAL(38,0),
			// with the same values.
			if got.cols[3] != (warehouse.Column{Name: "hi", Type: warehouse.TypeNumber, NativeType: "DECIMAL(38,0)"}) {
				t.Errorf("hugeint column: %+v", got.cols[3])
			}
			if got.cols[4] != (warehouse.Column{Name: "hs", Type: warehouse.TypeInteger, NativeType: "BIGINT"}) {
				t.Errorf("hugeint column of small values: %+v", got.cols[4])
			}
			got.cols[3], got.cols[4] = want.cols[3], want.cols[4]
			for _, r := range got.rows {
				if f, ok := r[3].(float64); ok && f == math.Trunc(f) {
					r[3] = int64(f)
				}
			}
			if !reflect.DeepEqual(got.cols, want.cols) {
				t.Errorf("columns:\n got %v\nwant %v", got.cols, want.cols)
			}
			if !reflect.DeepEqual(got.rows, want.rows) {
				t.Errorf("rows:\n got %#v\nwant %#v", got.rows, want.rows)
			}
			// Re-aggregation over the Parquet answers like the warehouse.
			q := "SELECT b, sum(dec) AS s, sum(bi) AS n, min(ts) AS first, max(dt) AS last FROM %s GROUP BY b ORDER BY b NULLS LAST"
			got = mustServe(t, e, out, "b1", fmt.Sprintf(q, "preagg"))
			want = onWarehouse(t, wh, fmt.Sprintf(q, "t"))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("aggregate:\n got %v %v\nwant %v %v", got.cols, got.rows, want.cols, want.rows)
			}
		})
	}
}

// A PostgreSQL warehouse's rows come back with the same values; numerics
// become exact DECIMALs.
func TestBuildServeRoundTripPostgres(t *testing.T) {
	t.Parallel()
	wh, schema := pgWarehouse(t,
		`CREATE TABLE %[1]s.t (id int PRIMARY KEY, i int4, bi int8, n numeric(12,2), nu numeric, d float8, b bool, s text,
			dt date, ts timestamp, tstz timestamptz)`,
		`INSERT INTO %[1]s.t VALUES
			(1, 7, 9007199254740993, 12.34, 123456789012345678.123456789, 0.1, true, 'héllo ✓ 日本', '2024-03-01', '2024-03-01 12:34:56.789', '2024-03-01 12:34:56+02'),
			(2, -7, -1, 12.50, -0.5, -2.5e300, false, '', '1999-12-31', '1970-01-01 00:00:00', '2000-01-01 00:00:00.000001+00'),
			(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`)
	e := newEngine(t, dirStore(t), Config{})
	q := "SELECT * FROM " + schema + ".t"
	out := mustBuild(t, e, wh, "pg1", q, nil)
	got := mustServe(t, e, out, "pg1", "SELECT * FROM preagg ORDER BY id")
	want := onWarehouse(t, wh, q+" ORDER BY id")
	if len(got.cols) != len(want.cols) {
		t.Fatalf("columns: got %v want %v", got.cols, want.cols)
	}
	for i := range got.cols {
		if got.cols[i].Name != want.cols[i].Name || got.cols[i].Type != want.cols[i].Type {
			t.Errorf("column %d: got %+v want %+v", i, got.cols[i], want.cols[i])
		}
	}
	if got.cols[3].NativeType != "DECIMAL(18,2)" || got.cols[4].NativeType != "DECIMAL(27,9)" {
		t.Errorf("numerics stored as %s and %s", got.cols[3].NativeType, got.cols[4].NativeType)
	}
	if !reflect.DeepEqual(got.rows, want.rows) {
		t.Errorf("rows:\n got %#v\nwant %#v", got.rows, want.rows)
	}
	// Sums over the exact decimals equal the warehouse's.
	agg := "SELECT sum(n) AS n, sum(nu) AS nu, count(*) AS c FROM %s"
	g, w := mustServe(t, e, out, "pg1", fmt.Sprintf(agg, "preagg")), onWarehouse(t, wh, fmt.Sprintf(agg, schema+".t"))
	if !reflect.DeepEqual(g.rows, w.rows) {
		t.Errorf("sums: got %v want %v", g.rows, w.rows)
	}
}

// A numeric too wide for DECIMAL(38) becomes DOUBLE rather than failing.
func TestBuildWideNumericIsDouble(t *testing.T) {
	t.Parallel()
	wh, schema := pgWarehouse(t, `CREATE TABLE %[1]s.t AS SELECT 1234567890123456789012345678901234567890.5::numeric AS x UNION ALL SELECT 'NaN'::numeric`)
	e := newEngine(t, dirStore(t), Config{})
	out := mustBuild(t, e, wh, "w", "SELECT x FROM "+schema+".t", nil)
	r := mustServe(t, e, out, "w", "SELECT x FROM preagg ORDER BY x NULLS FIRST")
	if r.cols[0].NativeType != "DOUBLE" || len(r.rows) != 2 {
		t.Fatalf("%v %v", r.cols, r.rows)
	}
	if f, ok := r.rows[0][0].(float64); !ok || math.Abs(f-1.2345678901234568e39)/1.2345678901234568e39 > 1e-12 {
		t.Errorf("wide value: %#v", r.rows[0][0])
	}
}

// A build that returns nothing still serves its (empty) schema.
func TestBuildEmpty(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, duckTypesTable)
	e := newEngine(t, natsStore(t), Config{})
	out := mustBuild(t, e, wh, "e", "SELECT s, dt, count(*) AS n FROM t WHERE false GROUP BY ALL", nil)
	if len(out.Partitions) != 1 || out.Partitions[0].Rows != 0 {
		t.Fatalf("%+v", out.Partitions)
	}
	r := mustServe(t, e, out, "e", "SELECT s, dt, n FROM preagg")
	if len(r.rows) != 0 || len(r.cols) != 3 || r.cols[1].Type != warehouse.TypeDate || r.cols[2].Type != warehouse.TypeInteger {
		t.Fatalf("%v %v", r.cols, r.rows)
	}
}

// --- partitions ------------------------------------------------------------

func TestBuildPartitioned(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, `CREATE TABLE f AS SELECT TIMESTAMP '2024-01-01' + INTERVAL (i * 7) HOUR AS ts, ['a','b','c'][i % 3 + 1] AS cat, i AS v
		FROM range(0, 600) r(i)`, `INSERT INTO f VALUES (NULL, 'a', 1000)`)
	d := dirStore(t)
	e := newEngine(t, d, Config{})
	q := "SELECT date_trunc('month', ts)::DATE AS m, cat, count(*) AS n, sum(v) AS s FROM f GROUP BY ALL"
	kept := api.PartitionObject{Key: "2023-12-01", Object: "p/orders/daily/old/2023-12-01.parquet", Rows: 5, Bytes: 10, BuildUUID: "old"}
	replaced := api.PartitionObject{Key: "2024-02-01", Object: "p/orders/daily/old/2024-02-01.parquet", Rows: 5, Bytes: 10, BuildUUID: "old"}
	out := mustBuild(t, e, wh, "part", q, func(b *api.ClaimedBuild) {
		b.Plan.PartitionColumn = "m"
		b.Keep = []api.PartitionObject{replaced, kept}
	})
	// 600 rows 7 h apart span 2024-01-01 .. 2024-06-24: six months, and
	// the NULL timestamp's own partition.
	var keys []string
	var total int64
	for _, p := range out.Partitions {
		keys = append(keys, p.Key)
		if p.Key == kept.Key {
			if p != kept {
				t.Errorf("kept partition changed: %+v", p)
			}
			continue
		}
		total += p.Rows
		if p.BuildUUID != "part" || p.Object != "p/orders/daily/part/"+p.Key+".parquet" || p.Bytes <= 0 {
			t.Errorf("partition %+v", p)
		}
		// Each object holds exactly its partition's rows, without the column.
		r := mustServe(t, e, api.BuildComplete{Partitions: []api.PartitionObject{p}}, "part", "SELECT * FROM preagg")
		if int64(len(r.rows)) != p.Rows || len(r.cols) != 3 || r.cols[0].Name != "cat" {
			t.Errorf("partition %s: %d rows, columns %v", p.Key, len(r.rows), r.cols)
		}
	}
	want := []string{"2023-12-01", "2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01", "null"}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	w := onWarehouse(t, wh, "SELECT count(*) FROM ("+q+")")
	if total != w.rows[0][0].(int64) {
		t.Errorf("%d rows in the new partitions, the query has %v", total, w.rows[0][0])
	}
	// The fresh partitions together re-aggregate to the warehouse's totals.
	fresh := slicesDeleteKept(out.Partitions, kept.Key)
	g := mustServe(t, e, api.BuildComplete{Partitions: fresh}, "part", "SELECT cat, sum(n) AS n, sum(s) AS s FROM preagg GROUP BY cat ORDER BY cat")
	ww := onWarehouse(t, wh, "SELECT cat, count(*) AS n, sum(v) AS s FROM f GROUP BY cat ORDER BY cat")
	if !reflect.DeepEqual(g.rows, ww.rows) {
		t.Errorf("re-aggregated: got %v want %v", g.rows, ww.rows)
	}
	if n := len(storeKeys(t, d)); n != 7 {
		t.Errorf("%d objects written, want 7: %v", n, storeKeys(t, d))
	}
}

func slicesDeleteKept(ps []api.PartitionObject, key string) []api.PartitionObject {
	var out []api.PartitionObject
	for _, p := range ps {
		if p.Key != key {
			out = append(out, p)
		}
	}
	return out
}

func TestBuildPartitionColumnErrors(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, duckTypesTable)
	e := newEngine(t, dirStore(t), Config{})
	for col, want := range map[string]string{"nope": "not among", "s": "not a date or timestamp"} {
		_, err := build(t, e, wh, "bad", "SELECT s, dt FROM t", func(b *api.ClaimedBuild) { b.Plan.PartitionColumn = col })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("partition column %s: %v", col, err)
		}
	}
}

// --- failures never leave objects ------------------------------------------

func TestBuildMaxRowsFailsFast(t *testing.T) {
	t.Parallel()
	// PostgreSQL streams: a query of 10^11 rows ends only because the
	// build fails at the 11th row.
	pg, _ := pgWarehouse(t)
	duck := duckWarehouse(t, "CREATE TABLE x (i INT)")
	for name, c := range map[string]struct {
		wh api.WarehouseConn
		q  string
	}{
		"postgres": {pg, "SELECT generate_series(1, 100000000000) AS i"},
		"duckdb":   {duck, "SELECT range AS i FROM range(3000000)"}, // duckdb-go materializes the result first
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := dirStore(t)
			e := newEngine(t, d, Config{})
			_, err := build(t, e, c.wh, "big", c.q, func(b *api.ClaimedBuild) { b.MaxRows = 10 })
			if !errors.Is(err, ErrTooManyRows) || !strings.Contains(err.Error(), "more than 10 rows (max_rows); the previous build keeps serving") {
				t.Fatalf("err = %v", err)
			}
			if keys := storeKeys(t, d); len(keys) != 0 {
				t.Fatalf("objects left: %v", keys)
			}
			// Exactly MaxRows rows is fine.
			out, err := build(t, e, c.wh, "ten", "SELECT 1 AS i FROM (VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10)) v(x)",
				func(b *api.ClaimedBuild) { b.MaxRows = 10 })
			if err != nil || out.Partitions[0].Rows != 10 {
				t.Fatal(out, err)
			}
		})
	}
}

// failingStore fails the nth Put.
type failingStore struct {
	storage.Store
	n    int
	puts atomic.Int32
}

func (f *failingStore) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if int(f.puts.Add(1)) == f.n {
		return 0, errors.New("store unavailable")
	}
	return f.Store.Put(ctx, key, r)
}

func TestBuildFailedUploadRemovesItsObjects(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT DATE '2024-01-01' + INTERVAL (i) DAY AS d, i FROM range(90) r(i)")
	d := dirStore(t)
	e := newEngine(t, &failingStore{Store: d, n: 3}, Config{})
	_, err := build(t, e, wh, "up", "SELECT date_trunc('month', d)::DATE AS m, sum(i) AS s FROM f GROUP BY ALL",
		func(b *api.ClaimedBuild) { b.Plan.PartitionColumn = "m" })
	if err == nil || !strings.Contains(err.Error(), "store unavailable") {
		t.Fatalf("err = %v", err)
	}
	if keys := storeKeys(t, d); len(keys) != 0 {
		t.Fatalf("objects left: %v", keys)
	}
}

func TestBuildWarehouseErrors(t *testing.T) {
	t.Parallel()
	e := newEngine(t, dirStore(t), Config{})
	wh := duckWarehouse(t, "CREATE TABLE x (i INT)")
	if _, err := build(t, e, wh, "q", "SELECT * FROM missing_table", nil); err == nil || !strings.Contains(err.Error(), "missing_table") {
		t.Errorf("bad SQL: %v", err)
	}
	if _, err := build(t, e, api.WarehouseConn{Type: "oracle", URL: "x"}, "q", "SELECT 1", nil); err == nil {
		t.Error("unknown warehouse type accepted")
	}
	if _, err := build(t, e, wh, "q", "SELECT 1 AS a", func(b *api.ClaimedBuild) { b.ObjectPrefix = "../escape" }); err == nil {
		t.Error("an object prefix with .. accepted")
	}
}

func TestBuildKeyValue(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT TIMESTAMP '2024-05-01 10:00:00' AS updated_at, 3 AS n")
	e := newEngine(t, dirStore(t), Config{})
	out := mustBuild(t, e, wh, "k", "SELECT n FROM f", func(b *api.ClaimedBuild) { b.KeySQL = "SELECT max(updated_at) FROM f" })
	if out.KeyValue != "2024-05-01T10:00:00Z" {
		t.Errorf("keyValue %q", out.KeyValue)
	}
	out = mustBuild(t, e, wh, "k2", "SELECT n FROM f", func(b *api.ClaimedBuild) { b.KeySQL = "SELECT max(n) FROM f" })
	if out.KeyValue != "3" {
		t.Errorf("keyValue %q", out.KeyValue)
	}
}

// --- serving ---------------------------------------------------------------

func TestServeMissingObject(t *testing.T) {
	t.Parallel()
	for name, s := range map[string]storage.Store{"dir": dirStore(t), "nats": natsStore(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A warehouse file of its own: two DuckDB instances opening one
			// file at the same moment can refuse each other.
			wh := duckWarehouse(t, duckTypesTable)
			e := newEngine(t, s, Config{})
			out := mustBuild(t, e, wh, "m1", "SELECT id, s FROM t", nil)
			plan := api.ServePlan{BuildUUID: "m1", SQL: "SELECT count(*) FROM preagg",
				Objects: append(out.Partitions, api.PartitionObject{Key: "x", Object: "p/orders/daily/m1/lost.parquet"})}
			_, err := serve(t, e, plan)
			if !errors.Is(err, ErrObjectMissing) || !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "lost.parquet") {
				t.Fatalf("missing object: %v", err)
			}
			// An object deleted after the build is missing too (unless cached).
			out2 := mustBuild(t, e, wh, "m2", "SELECT id FROM t", nil)
			if err := s.Delete(t.Context(), out2.Partitions[0].Object); err != nil {
				t.Fatal(err)
			}
			if _, err := serve(t, e, api.ServePlan{BuildUUID: "m2", Objects: out2.Partitions, SQL: "SELECT * FROM preagg"}); !errors.Is(err, ErrObjectMissing) {
				t.Fatalf("deleted object: %v", err)
			}
			// The engine still serves the first build.
			if r := mustServe(t, e, out, "m1", "SELECT count(*) AS n FROM preagg"); r.rows[0][0] != int64(3) {
				t.Fatalf("%v", r.rows)
			}
		})
	}
}

// Queries over different builds run side by side, each seeing only its
// own build under the name preagg.
func TestServeConcurrent(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT i % 7 AS k, i AS v FROM range(5000) r(i)")
	e := newEngine(t, natsStore(t), Config{Threads: 2})
	const builds = 4
	outs := make([]api.BuildComplete, builds)
	for i := range builds {
		outs[i] = mustBuild(t, e, wh, fmt.Sprintf("c%d", i), fmt.Sprintf("SELECT k, sum(v) + %d AS s, count(*) AS n FROM f GROUP BY k", i*1000000), nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 8 {
		wg.Go(func() {
			for j := range 10 {
				i := (w + j) % builds
				r, err := serve(t, e, api.ServePlan{BuildUUID: fmt.Sprintf("c%d", i), Objects: outs[i].Partitions,
					SQL: "SELECT sum(s) AS s, sum(n) AS n FROM preagg"})
				want := []any{int64(5000*4999/2 + 7*i*1000000), int64(5000)}
				if err != nil {
					errs <- err
				} else if !reflect.DeepEqual(r.rows, [][]any{want}) {
					errs <- fmt.Errorf("build %d: got %v want %v", i, r.rows, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServeCancelInterruptsDuckDB(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT 1 AS k")
	e := newEngine(t, dirStore(t), Config{Threads: 1})
	out := mustBuild(t, e, wh, "x", "SELECT k FROM f", nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		// Hours of work unless interrupted.
		done <- e.Serve(ctx, api.ServePlan{BuildUUID: "x", Objects: out.Partitions,
			SQL: "SELECT sum(a.range * b.range * k) FROM range(1000000000) a, range(1000000000) b, preagg"},
			func([]warehouse.Column) error { return nil }, func([]any) error { return nil })
	}()
	time.AfterFunc(100*time.Millisecond, cancel)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Serve did not stop when its context was cancelled")
	}
	// The engine (and its connections) still serve.
	if r := mustServe(t, e, out, "x", "SELECT k FROM preagg"); r.rows[0][0] != int64(1) {
		t.Fatal(r.rows)
	}
}

// A callback's error is returned as is (the uploader's, e.g.), not as a
// DuckDB failure.
func TestServeCallbackError(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT range AS k FROM range(10)")
	e := newEngine(t, dirStore(t), Config{})
	out := mustBuild(t, e, wh, "x", "SELECT k FROM f", nil)
	boom := errors.New("upload failed")
	err := e.Serve(t.Context(), api.ServePlan{BuildUUID: "x", Objects: out.Partitions, SQL: "SELECT k FROM preagg"},
		func([]warehouse.Column) error { return nil }, func([]any) error { return boom })
	if err != boom {
		t.Fatalf("got %v", err)
	}
	if _, err := serve(t, e, api.ServePlan{BuildUUID: "x", Objects: out.Partitions, SQL: "SELECT nope FROM preagg"}); err == nil ||
		errors.Is(err, ErrObjectMissing) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("bad SQL: %v", err)
	}
	if _, err := serve(t, e, api.ServePlan{BuildUUID: "x", SQL: "SELECT 1"}); err == nil {
		t.Fatal("a plan without objects served")
	}
}

// The serving DuckDB runs with the configured limits, on every connection.
func TestServeSettings(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT 1 AS k")
	cache := t.TempDir()
	e := newEngine(t, dirStore(t), Config{MemoryLimit: "123MB", Threads: 3, CacheDir: cache})
	out := mustBuild(t, e, wh, "x", "SELECT k FROM f", nil)
	var wg sync.WaitGroup
	for range 4 { // several pooled connections
		wg.Go(func() {
			r, err := serve(t, e, api.ServePlan{BuildUUID: "x", Objects: out.Partitions,
				SQL: "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t, current_setting('temp_directory') AS d, current_setting('TimeZone') AS z, count(*) AS n FROM preagg"})
			if err != nil {
				t.Error(err)
				return
			}
			row := r.rows[0]
			// DuckDB reports the limit in MiB: 123 MB = 117.3 MiB.
			if row[0] != "117.3 MiB" || row[1] != int64(3) || row[2] != filepath.Join(cache, "spill") || row[3] != "UTC" {
				t.Errorf("settings %v", row)
			}
		})
	}
	wg.Wait()
	if _, err := New(Config{MemoryLimit: "lots", CacheDir: t.TempDir()}, dirStore(t)); err == nil || !strings.Contains(err.Error(), "memory_limit") {
		t.Errorf("a bad memory limit: %v", err)
	}
}

// The memory limit holds: a query needing more fails (or spills) instead of
// growing the process.
func TestServeMemoryLimitEnforced(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT 1 AS k")
	e := newEngine(t, dirStore(t), Config{MemoryLimit: "32MB", Threads: 1})
	out := mustBuild(t, e, wh, "x", "SELECT k FROM f", nil)
	// list() of 20M integers in one group cannot spill.
	_, err := serve(t, e, api.ServePlan{BuildUUID: "x", Objects: out.Partitions,
		SQL: "SELECT k, length(list(range)) FROM preagg, range(20000000) GROUP BY k"})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "memory") {
		t.Fatalf("a query over the memory limit: %v", err)
	}
}

// --- metrics ---------------------------------------------------------------

// gathered sums a metric's counters' values and histograms' sample counts.
func gathered(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, "CREATE TABLE f AS SELECT range AS k FROM range(25)")
	e := newEngine(t, dirStore(t), Config{})
	rows0 := gathered(t, "millrace_pre_aggregate_build_rows_total")
	builds0 := gathered(t, "millrace_pre_aggregate_build_duration_seconds")
	out := mustBuild(t, e, wh, "x", "SELECT k FROM f", nil)
	if d := gathered(t, "millrace_pre_aggregate_build_rows_total") - rows0; d < 25 {
		t.Errorf("build rows counter grew by %v", d)
	}
	if d := gathered(t, "millrace_pre_aggregate_build_duration_seconds") - builds0; d < 1 {
		t.Errorf("build duration histogram grew by %v", d)
	}
	q0 := gathered(t, "millrace_pre_aggregate_duckdb_query_latency_seconds")
	mustServe(t, e, out, "x", "SELECT * FROM preagg")
	if d := gathered(t, "millrace_pre_aggregate_duckdb_query_latency_seconds") - q0; d < 1 {
		t.Errorf("latency histogram grew by %v", d)
	}
}

// peakRSS is the process's peak resident set (VmHWM) in MiB.
func peakRSS(b *testing.B) float64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(s), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkBuildAndServe builds a 2-million-row materialization (a
// partitioned daily rollup's shape) and serves a dashboard-style query
// from it, under a 256MB DuckDB limit; it reports the process's peak RSS.
func BenchmarkBuildAndServe(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "wh.duckdb")
	db, err := sql.Open("duckdb", path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE f AS SELECT DATE '2023-01-01' + INTERVAL (i % 730) DAY AS d, 'cat_' || (i % 1000) AS c,
		i % 7 AS k, (i % 10007) * 1.25 AS v FROM range(2000000) r(i)`); err != nil {
		b.Fatal(err)
	}
	db.Close()
	st, err := storage.OpenDir(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	e, err := New(Config{MemoryLimit: "256MB", Threads: 2, CacheDir: filepath.Join(dir, "cache")}, st)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	before := peakRSS(b)
	out, err := e.Build(b.Context(), api.ClaimedBuild{BuildUUID: "bench", Warehouse: api.WarehouseConn{Type: "duckdb", URL: path},
		Plan: api.BuildPlan{SQL: "SELECT d::DATE AS d, c, k, sum(v) AS v, count(*) AS n FROM f GROUP BY ALL"}, MaxRows: 10_000_000, ObjectPrefix: "p/m/a/bench"})
	if err != nil {
		b.Fatal(err)
	}
	afterBuild := peakRSS(b)
	plan := api.ServePlan{BuildUUID: "bench", Objects: out.Partitions,
		SQL: "SELECT date_trunc('month', d) AS m, k, sum(v) AS v, sum(n) AS n FROM preagg GROUP BY ALL ORDER BY m, k"}
	b.ResetTimer()
	for b.Loop() {
		if err := e.Serve(b.Context(), plan, func([]warehouse.Column) error { return nil }, func([]any) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(out.Partitions[0].Rows), "rows")
	b.ReportMetric(float64(out.Partitions[0].Bytes)/(1<<20), "parquet_MiB")
	b.ReportMetric(before, "rss_before_MiB")
	b.ReportMetric(afterBuild, "peak_rss_build_MiB")
	b.ReportMetric(peakRSS(b), "peak_rss_serve_MiB")
}

// Kept partitions come from older builds, whose column types were sized
// from their own data: a build serves across them all the same.
func TestServeAcrossBuildsOfDifferentTypes(t *testing.T) {
	t.Parallel()
	wh := duckWarehouse(t, `CREATE TABLE f AS SELECT * FROM (VALUES
		(DATE '2024-01-01', 5::HUGEINT, 1.5::DECIMAL(4,1)),
		(DATE '2024-02-01', 12345678901234567890123::HUGEINT, 123456.25::DECIMAL(12,2))) v(m, n, x)`)
	e := newEngine(t, dirStore(t), Config{})
	part := func(b *api.ClaimedBuild) { b.Plan.PartitionColumn = "m" }
	old := mustBuild(t, e, wh, "old", "SELECT * FROM f WHERE m < DATE '2024-02-01'", part)
	cur := mustBuild(t, e, wh, "new", "SELECT * FROM f WHERE m >= DATE '2024-02-01'", func(b *api.ClaimedBuild) {
		part(b)
		b.Keep = old.Partitions
	})
	if len(cur.Partitions) != 2 || cur.Partitions[0].BuildUUID != "old" || cur.Partitions[1].BuildUUID != "new" {
		t.Fatalf("%+v", cur.Partitions)
	}
	r := mustServe(t, e, cur, "new", "SELECT sum(n) AS n, sum(x) AS x, count(*) AS c FROM preagg")
	w := onWarehouse(t, wh, "SELECT sum(n) AS n, sum(x) AS x, count(*) AS c FROM f")
	if !reflect.DeepEqual(r.rows, w.rows) {
		t.Fatalf("got %v want %v", r.rows, w.rows)
	}
}
