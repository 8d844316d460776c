package builds_test

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/warehouse"
)

// refresh.key_sql is polled on the real warehouse every key_every: a
// changed value queues exactly one build, an unchanged one none, and no
// poll happens before key_every has passed.
func TestKeySQLChangeTriggersOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
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
		exec("create table marks (v timestamptz)")
		exec("insert into marks values ('2024-01-01T00:00:00Z')")
		f.conn = warehouse.Conn{Type: "postgres", URL: wh}
		f.putModel(orders(semantic.Refresh{KeySQL: "select max(v) from marks", KeyEvery: semantic.Duration(time.Minute)}))
		s := f.service(builds.Config{NATSEnabled: true})

		q, err := s.ScheduleOnce(t.Context())
		if err != nil || len(q) != 1 || q[0].Trigger != builds.TriggerDefinition {
			t.Fatalf("first pass = %v, %v; want the definition build only (the first key is recorded)", triggers(q), err)
		}
		run(t, s, q[0].BuildUUID, "w1", 5)
		pass := func(advance time.Duration) []string {
			t.Helper()
			f.clock.Add(advance)
			q, err := s.ScheduleOnce(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range q {
				run(t, s, b.BuildUUID, "w1", 5)
			}
			return triggers(q)
		}
		if got := pass(time.Minute); len(got) != 0 {
			t.Fatalf("unchanged key queued %v", got)
		}
		exec("insert into marks values ('2024-01-02T00:00:00Z')")
		if got := pass(30 * time.Second); len(got) != 0 {
			t.Fatalf("before key_every the key was polled and queued %v", got)
		}
		if got := pass(30 * time.Second); !slices.Equal(got, []string{builds.TriggerKeySQL}) {
			t.Fatalf("changed key queued %v, want one key_sql build", got)
		}
		for range 3 {
			if got := pass(time.Minute); len(got) != 0 {
				t.Fatalf("after the rebuild the same key queued %v", got)
			}
		}
		l, err := s.List(t.Context(), "shop")
		if err != nil || l.PreAggregates[0].KeyValue == "" || l.PreAggregates[0].KeyCheckedAt == nil {
			t.Fatalf("list = %+v, %v; want the key's value and poll time", l, err)
		}
		if n := len(f.builds()); n != 2 {
			t.Fatalf("%d builds in all, want 2", n)
		}
	})
}

// A partitioned pre-aggregate's first build is full; a refresh after it
// recomputes only the partitions of the update window and keeps the older
// ones of the active build as they are.
func TestPartitionedRefreshRebuildsOnlyTheWindow(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		m := orders(semantic.Refresh{Cron: "0 * * * *", PartitionBy: semantic.GrainDay, UpdateWindow: semantic.Duration(36 * time.Hour)})
		f.putModel(m)
		s := f.service(builds.Config{NATSEnabled: true})

		q, _ := s.ScheduleOnce(t.Context())
		if len(q) != 1 || q[0].Trigger != builds.TriggerDefinition || q[0].Rebuild != nil {
			t.Fatalf("first pass = %+v; want one full definition build", q)
		}
		first := q[0].BuildUUID
		c, err := s.Claim(t.Context(), first, "w1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Keep) != 0 {
			t.Fatalf("a full build keeps %v", keysOf(c.Keep))
		}
		if want, err := preagg.Plan(&m, &m.PreAggregates[0], semantic.Postgres, nil); err != nil || c.Plan != want || c.Plan.PartitionColumn == "" {
			t.Fatalf("full plan = %+v, want the full partitioned Plan (%v)", c.Plan, err)
		}
		all := parts(first, 10, days("2024-01-01", 10)...) // 2024-01-01 .. 2024-01-10
		if b, err := s.Complete(t.Context(), first, "w1", 0, api.BuildComplete{Partitions: all}); err != nil || b.Status != api.BuildActive {
			t.Fatalf("first build: %v %v", b.Status, err)
		}

		// 2024-01-10 11:00: cron fires; the window (36 h back: 2024-01-08
		// 23:00) covers 2024-01-08 .. 2024-01-10.
		f.clock.Set(time.Date(2024, 1, 10, 11, 0, 0, 0, time.UTC))
		q, err = s.ScheduleOnce(t.Context())
		if err != nil || len(q) != 1 || q[0].Trigger != builds.TriggerPartition {
			t.Fatalf("cron pass = %v, %v; want one partition build", triggers(q), err)
		}
		second := q[0].BuildUUID
		got := builds.ToAPI(q[0], "shop").Rebuilt
		if want := []string{"2024-01-08", "2024-01-09", "2024-01-10"}; !slices.Equal(got, want) {
			t.Fatalf("rebuild keys = %v, want %v", got, want)
		}
		c, err = s.Claim(t.Context(), second, "w1", 0)
		if err != nil {
			t.Fatal(err)
		}
		from := time.Date(2024, 1, 8, 0, 0, 0, 0, time.UTC)
		if want, err := preagg.Plan(&m, &m.PreAggregates[0], semantic.Postgres, &from); err != nil || c.Plan != want {
			t.Fatalf("window plan = %+v, want Plan from %s (%v)", c.Plan, from, err)
		}
		if want := days("2024-01-01", 7); !slices.Equal(keysOf(c.Keep), want) {
			t.Fatalf("kept = %v, want %v", keysOf(c.Keep), want)
		}
		for _, k := range c.Keep {
			if k.BuildUUID != first {
				t.Fatalf("kept partition %s names build %s, want %s", k.Key, k.BuildUUID, first)
			}
		}
		window := parts(second, 20, "2024-01-08", "2024-01-09", "2024-01-10")
		b, err := s.Complete(t.Context(), second, "w1", 0, api.BuildComplete{Partitions: append(slices.Clone(c.Keep), window...)})
		if err != nil || b.Status != api.BuildActive {
			t.Fatalf("partition build: %v %v (%s)", b.Status, err, b.Error)
		}
		active := f.active()
		if len(active) != 1 || active[0].BuildUUID != second || active[0].Rows != 7*10+3*20 {
			t.Fatalf("active = %+v", active)
		}
		ps := partitionsOf(t, active[0])
		if !slices.Equal(keysOf(ps), days("2024-01-01", 10)) {
			t.Fatalf("active partitions = %v", keysOf(ps))
		}
		for _, p := range ps {
			want := first
			if p.Key >= "2024-01-08" {
				want = second
			}
			if p.BuildUUID != want {
				t.Fatalf("partition %s from %s, want %s", p.Key, p.BuildUUID, want)
			}
		}

		// A lost object: the rebuild is full again.
		if err := s.OnObjectLost(t.Context(), f.project.ProjectID, "orders", "daily"); err != nil {
			t.Fatal(err)
		}
		var missing store.PreAggBuild
		for _, b := range f.builds() {
			if b.Trigger == builds.TriggerMissing {
				missing = b
			}
		}
		c, err = s.Claim(t.Context(), missing.BuildUUID, "w1", 0)
		if err != nil || len(c.Keep) != 0 {
			t.Fatalf("missing rebuild keeps %v, %v; want a full build", keysOf(c.Keep), err)
		}
	})
}

// Month partitions: the window is aligned to whole months.
func TestPartitionWindowMonths(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	m := orders(semantic.Refresh{Cron: "0 0 * * *", PartitionBy: semantic.GrainMonth, UpdateWindow: semantic.Duration(40 * 24 * time.Hour)})
	f.putModel(m)
	s := f.service(builds.Config{NATSEnabled: true})
	q, _ := s.ScheduleOnce(t.Context())
	if _, err := s.Claim(t.Context(), q[0].BuildUUID, "w1", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(t.Context(), q[0].BuildUUID, "w1", 0, api.BuildComplete{Partitions: parts(q[0].BuildUUID, 3, "2023-11-01", "2023-12-01", "2024-01-01")}); err != nil {
		t.Fatal(err)
	}
	f.clock.Set(time.Date(2024, 1, 11, 0, 0, 0, 0, time.UTC)) // 40 days back: 2023-12-02
	q, _ = s.ScheduleOnce(t.Context())
	if len(q) != 1 || !slices.Equal(builds.ToAPI(q[0], "shop").Rebuilt, []string{"2023-12-01", "2024-01-01"}) {
		t.Fatalf("month window build = %+v", q)
	}
	c, err := s.Claim(t.Context(), q[0].BuildUUID, "w1", 0)
	if err != nil || !slices.Equal(keysOf(c.Keep), []string{"2023-11-01"}) {
		t.Fatalf("kept = %v, %v; want [2023-11-01]", keysOf(c.Keep), err)
	}
}
