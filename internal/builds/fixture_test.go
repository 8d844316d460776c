package builds_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/warehouse"
)

// clock is a test's settable time. Each reading advances it by a
// microsecond, as real time would, so builds queued one after another have
// distinct creation times (promotion orders builds by them).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond)
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// projects finds projects in the store; every project's warehouse is conn.
type projects struct {
	st   *store.Store
	conn warehouse.Conn
}

func (p projects) Project(ctx context.Context, name string) (store.Project, error) {
	return store.ReadValue(ctx, p.st, func(q store.Querier) (store.Project, error) { return q.ProjectGet(ctx, name) })
}

func (p projects) Connection(store.Project) (warehouse.Conn, error) { return p.conn, nil }

// fx is one test's deployment of builds: a store (SQLite or PostgreSQL),
// a project, a clock, and services over them.
type fx struct {
	t       *testing.T
	st      *store.Store
	clock   *clock
	project store.Project
	conn    warehouse.Conn
	wakes   atomic.Int32
}

var stores = []string{"sqlite", "postgres"}

// eachStore runs fn as parallel subtests on both stores.
func eachStore(t *testing.T, fn func(t *testing.T, kind string)) {
	for _, kind := range stores {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fn(t, kind)
		})
	}
}

var start = time.Date(2024, 1, 10, 10, 30, 0, 0, time.UTC)

func newFx(t *testing.T, kind string) *fx {
	t.Helper()
	var drv store.Driver
	if kind == "postgres" {
		drv = pgtest.Open(t)
	} else {
		drv = sqlitetest.Open(t)
	}
	return newFxOn(t, drv)
}

func newFxOn(t *testing.T, drv store.Driver) *fx {
	t.Helper()
	st := store.New(drv, store.Options{})
	t.Cleanup(func() { _ = st.Close() })
	f := &fx{t: t, st: st, clock: &clock{t: start}, conn: warehouse.Conn{Type: "postgres", URL: pgtest.URL()}}
	err := st.Do(t.Context(), 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		f.project, err = tx.ProjectPut(ctx, store.Project{ProjectID: 42, Name: "shop", WarehouseType: "postgres", Warehouse: []byte("sealed"), CreatedAt: start, UpdatedAt: start})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// twoDrivers opens two PostgreSQL drivers on one fresh schema: two servers
// sharing a database.
func twoDrivers(t *testing.T) (store.Driver, store.Driver) {
	t.Helper()
	url := pgtest.NewSchema(t)
	open := func() store.Driver {
		d, err := pgdriver.Open(t.Context(), url, pgdriver.Options{MaxConns: pgtest.MaxConns})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		if err := d.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return open(), open()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func (f *fx) service(cfg builds.Config, opts ...builds.Option) *builds.Service {
	f.t.Helper()
	cfg.Enabled = true
	if cfg.MaxRows == 0 {
		cfg.MaxRows = 1000
	}
	opts = append([]builds.Option{builds.WithClock(f.clock.Now)}, opts...)
	s := builds.New(cfg, f.st, ids.New(int(f.wakes.Add(1))), projects{st: f.st, conn: f.conn}, quiet, func() { f.wakes.Add(1) }, opts...)
	f.t.Cleanup(s.Stop)
	return s
}

// orders is the test's model: a pre-aggregate "daily" by status at day
// grain, with refresh r.
func orders(r semantic.Refresh, metrics ...string) semantic.Model {
	if len(metrics) == 0 {
		metrics = []string{"revenue"}
	}
	return semantic.Model{Name: "orders", Table: "orders",
		Dimensions: []semantic.Dimension{{Name: "status", Type: semantic.DimString}, {Name: "created_at", Type: semantic.DimTimestamp}},
		Metrics: []semantic.Metric{{Name: "revenue", Type: semantic.MetricSum, SQL: "amount"}, {Name: "order_count", Type: semantic.MetricCount},
			{Name: "buyers", Type: semantic.MetricCountDistinct, SQL: "customer_id"}},
		PreAggregates: []semantic.PreAggregate{{Name: "daily", Dimensions: []string{"status"}, Metrics: metrics,
			TimeDimension: "created_at", Granularity: semantic.GrainDay, Refresh: r}}}
}

func (f *fx) putModel(m semantic.Model) {
	f.t.Helper()
	def, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	err = f.st.Do(f.t.Context(), 0, func(ctx context.Context, tx store.Tx) error {
		return tx.ModelPut(ctx, store.SemanticModel{ProjectID: f.project.ProjectID, Name: m.Name, Definition: def,
			Hash: semantic.ModelHash(&m), Source: "test", UpdatedAt: f.clock.Now()})
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fx) builds() []store.PreAggBuild {
	f.t.Helper()
	list, err := store.ReadValue(f.t.Context(), f.st, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildList(f.t.Context(), f.project.ProjectID, "", "", 0, 1000)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

func (f *fx) build(uuid string) store.PreAggBuild {
	f.t.Helper()
	b, err := store.ReadValue(f.t.Context(), f.st, func(q store.Querier) (store.PreAggBuild, error) { return q.BuildGet(f.t.Context(), uuid) })
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// active returns the project's active builds.
func (f *fx) active() []store.PreAggBuild {
	f.t.Helper()
	list, err := store.ReadValue(f.t.Context(), f.st, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildsActive(f.t.Context(), f.project.ProjectID)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

// outbox returns the queued notifications' message ids.
func (f *fx) outbox() []store.OutboxMsg {
	f.t.Helper()
	list, err := store.ReadValue(f.t.Context(), f.st, func(q store.Querier) ([]store.OutboxMsg, error) {
		return q.OutboxFetch(f.t.Context(), f.clock.Now().Add(time.Hour), 1000)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return list
}

// drainOutbox deletes every outbox row, as a relay that published them
// would (and a NATS that then lost them).
func (f *fx) drainOutbox() {
	f.t.Helper()
	var idsOf []int64
	for _, m := range f.outbox() {
		idsOf = append(idsOf, m.ID)
	}
	if len(idsOf) == 0 {
		return
	}
	if err := f.st.Do(f.t.Context(), 0, func(ctx context.Context, tx store.Tx) error { return tx.OutboxDelete(ctx, idsOf) }); err != nil {
		f.t.Fatal(err)
	}
}

// parts makes a build's partition objects, one per key with rows each.
func parts(build string, rows int64, keys ...string) []api.PartitionObject {
	var out []api.PartitionObject
	for _, k := range keys {
		name := k
		if name == "" {
			name = "all"
		}
		out = append(out, api.PartitionObject{Key: k, Object: builds.ObjectPrefix("shop", "orders", "daily", build) + "/" + name + ".parquet",
			Rows: rows, Bytes: rows * 10, BuildUUID: build})
	}
	return out
}

// run claims build uuid as worker and completes it with rows in one
// unpartitioned object; it returns the build afterwards.
func run(t *testing.T, s *builds.Service, uuid, worker string, rows int64) store.PreAggBuild {
	t.Helper()
	if _, err := s.Claim(t.Context(), uuid, worker, 0); err != nil {
		t.Fatalf("claim %s: %v", uuid, err)
	}
	b, err := s.Complete(t.Context(), uuid, worker, 0, api.BuildComplete{Partitions: parts(uuid, rows, "")})
	if err != nil {
		t.Fatalf("complete %s: %v", uuid, err)
	}
	return b
}

func triggers(list []store.PreAggBuild) []string {
	var out []string
	for _, b := range list {
		out = append(out, b.Trigger)
	}
	slices.Sort(out)
	return out
}

func keysOf(objs []api.PartitionObject) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func partitionsOf(t *testing.T, b store.PreAggBuild) []api.PartitionObject {
	t.Helper()
	var out []api.PartitionObject
	if err := json.Unmarshal(b.Partitions, &out); err != nil {
		t.Fatalf("build %s partitions %s: %v", b.BuildUUID, b.Partitions, err)
	}
	return out
}

func days(from string, n int) []string {
	d, _ := time.Parse("2006-01-02", from)
	var out []string
	for i := range n {
		out = append(out, d.AddDate(0, 0, i).Format("2006-01-02"))
	}
	return out
}
