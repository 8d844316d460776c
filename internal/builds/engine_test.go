package builds_test

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/warehouse"
)

// In-process builds with the real engine over a real PostgreSQL warehouse
// and a real directory store: the first build is full, the cron refresh
// recomputes the update window only (with the warehouse changed meanwhile)
// and keeps the older partitions' objects, and the result is what the
// warehouse holds per day.
func TestInProcessRealEngine(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	wh := pgtest.NewSchema(t)
	pg, err := pgx.Connect(t.Context(), wh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close(t.Context()) })
	exec := func(sql string) {
		t.Helper()
		if _, err := pg.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	exec("create table orders (status text, created_at timestamptz, amount numeric, customer_id int)")
	// Ten days, 2024-01-01 .. 2024-01-10, two statuses a day.
	exec(`insert into orders select case when (i / 10) % 2 = 0 then 'paid' else 'open' end,
		timestamptz '2024-01-01 00:00:00+00' + (i % 10) * interval '1 day' + interval '1 hour', i, i % 7 from generate_series(0, 199) i`)
	f.conn = warehouse.Conn{Type: "postgres", URL: wh}
	m := orders(semantic.Refresh{Cron: "0 * * * *", PartitionBy: semantic.GrainDay, UpdateWindow: semantic.Duration(36 * time.Hour)})
	f.putModel(m)

	dir, err := storage.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Config{MemoryLimit: "256MB", Threads: 1, CacheDir: t.TempDir()}, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	s := f.service(builds.Config{NATSEnabled: false}, builds.WithBuilder(eng))

	q, err := s.ScheduleOnce(t.Context())
	if err != nil || len(q) != 1 {
		t.Fatalf("pass = %+v, %v", q, err)
	}
	first := waitStatus(t, f, q[0].BuildUUID, api.BuildActive)
	fp := partitionsOf(t, first)
	if !slices.Equal(keysOf(fp), days("2024-01-01", 10)) || first.Rows != 20 || first.DataAsOf == nil {
		t.Fatalf("first build: keys %v rows %d dataAsOf %v; want 10 days of 2 rows", keysOf(fp), first.Rows, first.DataAsOf)
	}

	// New orders on the last day; the cron refresh at 2024-01-10 11:00
	// rebuilds 2024-01-08 .. 2024-01-10 only.
	exec(`insert into orders values ('refunded', '2024-01-10 05:00:00+00', 5, 1)`)
	f.clock.Set(time.Date(2024, 1, 10, 11, 0, 0, 0, time.UTC))
	q, err = s.ScheduleOnce(t.Context())
	if err != nil || len(q) != 1 || q[0].Trigger != builds.TriggerPartition {
		t.Fatalf("cron pass = %v, %v", triggers(q), err)
	}
	second := waitStatus(t, f, q[0].BuildUUID, api.BuildActive)
	sp := partitionsOf(t, second)
	if !slices.Equal(keysOf(sp), days("2024-01-01", 10)) || second.Rows != 21 {
		t.Fatalf("second build: keys %v rows %d; want 10 days, 21 rows", keysOf(sp), second.Rows)
	}
	for i, p := range sp {
		want := first.BuildUUID
		if p.Key >= "2024-01-08" {
			want = second.BuildUUID
		}
		if p.BuildUUID != want {
			t.Fatalf("partition %s was written by %s, want %s", p.Key, p.BuildUUID, want)
		}
		if p.Key < "2024-01-08" && p != fp[i] {
			t.Fatalf("kept partition %+v differs from the first build's %+v", p, fp[i])
		}
	}
}
