package builds_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// A new pre-aggregate gets exactly one "definition" build; once it is
// active, passes queue nothing.
func TestDefinitionBuildOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true})
		q, err := s.ScheduleOnce(t.Context())
		if err != nil || len(q) != 1 || q[0].Trigger != builds.TriggerDefinition {
			t.Fatalf("first pass = %+v, %v; want one definition build", q, err)
		}
		for range 3 {
			f.clock.Add(10 * time.Second)
			if q, err := s.ScheduleOnce(t.Context()); err != nil || len(q) != 0 {
				t.Fatalf("pass with a pending build = %+v, %v; want none", q, err)
			}
		}
		if b := run(t, s, q[0].BuildUUID, "w1", 5); b.Status != api.BuildActive {
			t.Fatalf("the build is %s (%s), want active", b.Status, b.Error)
		}
		f.clock.Add(time.Hour)
		if q, err := s.ScheduleOnce(t.Context()); err != nil || len(q) != 0 {
			t.Fatalf("pass with an active build = %+v, %v; want none", q, err)
		}
		if n := len(f.builds()); n != 1 {
			t.Fatalf("%d builds, want 1", n)
		}
		// Its notification went to the outbox on the build subject.
		msgs := f.outbox()
		if len(msgs) != 1 || msgs[0].Subject != bus.DefaultPreAggBuildSubject {
			t.Fatalf("outbox = %+v, want one message on %s", msgs, bus.DefaultPreAggBuildSubject)
		}
		job, err := bus.DecodePreAggBuildJob(msgs[0].Payload)
		if err != nil || job.Payload.MaterializationUUID != q[0].BuildUUID {
			t.Fatalf("job = %+v, %v; want build %s", job, err, q[0].BuildUUID)
		}
	})
}

// A definition change (a new PreAggHash) queues exactly one "definition"
// build, and the old build stops serving at once: Match checks the hash.
func TestDefinitionChangeRebuildsOnceAndOldStopsServing(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		m1 := orders(semantic.Refresh{})
		f.putModel(m1)
		s := f.service(builds.Config{NATSEnabled: true})
		q, _ := s.ScheduleOnce(t.Context())
		old := run(t, s, q[0].BuildUUID, "w1", 5)

		query := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_status"}, Metrics: []string{"orders_revenue"}}
		match := func(m semantic.Model) preagg.Decision {
			t.Helper()
			r, err := semantic.Resolve(&m, query)
			if err != nil {
				t.Fatal(err)
			}
			active := map[string]preagg.ActiveBuild{}
			for _, b := range f.active() {
				active[b.PreAggregate] = preagg.ActiveBuild{BuildUUID: b.BuildUUID, DefHash: b.DefHash, Rows: b.Rows, BuiltAt: *b.EndedAt}
			}
			return preagg.Match(r, active, true, f.clock.Now())
		}
		if d := match(m1); !d.Hit || d.Build.BuildUUID != old.BuildUUID {
			t.Fatalf("before the change: %+v, want a hit on %s", d.Meta(), old.BuildUUID)
		}

		m2 := orders(semantic.Refresh{}, "revenue", "order_count")
		f.putModel(m2)
		if d := match(m2); d.Hit || d.Reason == nil || d.Reason.Code != api.PreAggMissNoBuild {
			t.Fatalf("after the change: %+v, want miss %s", d.Meta(), api.PreAggMissNoBuild)
		}
		q, err := s.ScheduleOnce(t.Context())
		if err != nil || len(q) != 1 || q[0].Trigger != builds.TriggerDefinition || q[0].DefHash == old.DefHash {
			t.Fatalf("pass after the change = %+v, %v; want one definition build of the new hash", q, err)
		}
		if again, _ := s.ScheduleOnce(t.Context()); len(again) != 0 {
			t.Fatalf("second pass queued %d more", len(again))
		}
		if b := run(t, s, q[0].BuildUUID, "w1", 7); b.Status != api.BuildActive {
			t.Fatalf("the new build is %s (%s)", b.Status, b.Error)
		}
		if got := f.build(old.BuildUUID).Status; got != api.BuildSuperseded {
			t.Fatalf("the old build is %s, want superseded", got)
		}
		if d := match(m2); !d.Hit || d.Build.BuildUUID != q[0].BuildUUID {
			t.Fatalf("after the rebuild: %+v, want a hit on %s", d.Meta(), q[0].BuildUUID)
		}
	})
}

// A build queued or running when the definition changes is never promoted:
// unclaimed it is superseded at claim, finished it is superseded at
// complete, and the active build stays.
func TestOutdatedBuildNeverPromoted(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true})
		q, _ := s.ScheduleOnce(t.Context())
		good := run(t, s, q[0].BuildUUID, "w1", 5)

		running, err := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Claim(t.Context(), running.BuildUUID, "w1", 0); err != nil {
			t.Fatal(err)
		}
		f.putModel(orders(semantic.Refresh{}, "revenue", "buyers")) // changes while it builds
		b, err := s.Complete(t.Context(), running.BuildUUID, "w1", 0, api.BuildComplete{Partitions: parts(running.BuildUUID, 9, "")})
		if err != nil || b.Status != api.BuildSuperseded || !strings.Contains(b.Error, "definition changed") {
			t.Fatalf("complete = %s %q, %v; want superseded (definition changed)", b.Status, b.Error, err)
		}
		if a := f.active(); len(a) != 1 || a[0].BuildUUID != good.BuildUUID {
			t.Fatalf("active = %+v, want still %s", a, good.BuildUUID)
		}

		queued, err := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		if err != nil {
			t.Fatal(err)
		}
		f.putModel(orders(semantic.Refresh{})) // back to the first definition: queued is outdated
		if _, err := s.Claim(t.Context(), queued.BuildUUID, "w1", 0); !errors.Is(err, builds.ErrNotClaimable) {
			t.Fatalf("claim of an outdated build = %v, want ErrNotClaimable", err)
		}
		if got := f.build(queued.BuildUUID).Status; got != api.BuildSuperseded {
			t.Fatalf("outdated queued build is %s, want superseded", got)
		}
	})
}

// A failed build and an empty build never shadow the active build; the
// error shows in the status list.
func TestFailedOrEmptyBuildKeepsActive(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true})
		q, _ := s.ScheduleOnce(t.Context())
		good := run(t, s, q[0].BuildUUID, "w1", 5)

		failing, _ := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		if _, err := s.Claim(t.Context(), failing.BuildUUID, "w1", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Fail(t.Context(), failing.BuildUUID, "w2", 0, "not mine"); !errors.Is(err, builds.ErrNotHolder) {
			t.Fatalf("fail by another worker = %v, want ErrNotHolder", err)
		}
		b, err := s.Fail(t.Context(), failing.BuildUUID, "w1", 0, "warehouse: relation orders does not exist")
		if err != nil || b.Status != api.BuildFailed {
			t.Fatalf("fail = %s, %v", b.Status, err)
		}
		check := func(wantErr string) {
			t.Helper()
			if a := f.active(); len(a) != 1 || a[0].BuildUUID != good.BuildUUID || a[0].Rows != 5 {
				t.Fatalf("active = %+v, want %s with 5 rows", a, good.BuildUUID)
			}
			l, err := s.List(t.Context(), "shop")
			if err != nil || len(l.PreAggregates) != 1 {
				t.Fatalf("list = %+v, %v", l, err)
			}
			pi := l.PreAggregates[0]
			if pi.Active == nil || pi.Active.BuildUUID != good.BuildUUID || !strings.Contains(pi.LastError, wantErr) || pi.Last == nil || pi.Last.Status != api.BuildFailed {
				t.Fatalf("status = %+v; want active %s, last failed, lastError containing %q", pi, good.BuildUUID, wantErr)
			}
		}
		check("relation orders does not exist")

		empty, _ := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		if _, err := s.Claim(t.Context(), empty.BuildUUID, "w1", 0); err != nil {
			t.Fatal(err)
		}
		b, err = s.Complete(t.Context(), empty.BuildUUID, "w1", 0, api.BuildComplete{Partitions: parts(empty.BuildUUID, 0, "")})
		if err != nil || b.Status != api.BuildFailed || !strings.Contains(b.Error, "empty build") {
			t.Fatalf("empty complete = %s %q, %v; want failed: empty build", b.Status, b.Error, err)
		}
		check("empty build")
	})
}

// An empty first build (nothing active) is promoted: an empty table is a
// true answer, not a failure to shadow.
func TestEmptyFirstBuildIsPromoted(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	f.putModel(orders(semantic.Refresh{}))
	s := f.service(builds.Config{NATSEnabled: true})
	q, _ := s.ScheduleOnce(t.Context())
	if b := run(t, s, q[0].BuildUUID, "w1", 0); b.Status != api.BuildActive {
		t.Fatalf("empty first build is %s (%s), want active", b.Status, b.Error)
	}
}

// Promotion is atomic: readers polling the active builds while builds are
// promoted one after another always see exactly one, whole, active build.
func TestPromotionAtomicUnderConcurrentReads(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true})
		q, _ := s.ScheduleOnce(t.Context())
		run(t, s, q[0].BuildUUID, "w1", 3)

		ctx, cancel := context.WithCancel(t.Context())
		var reads atomic.Int64
		var bad atomic.Value
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					list, err := store.ReadValue(ctx, f.st, func(q store.Querier) ([]store.PreAggBuild, error) {
						return q.BuildsActive(ctx, f.project.ProjectID)
					})
					if err != nil {
						if ctx.Err() == nil {
							bad.Store(fmt.Sprintf("read: %v", err))
						}
						return
					}
					reads.Add(1)
					if len(list) != 1 {
						bad.Store(fmt.Sprintf("%d active builds", len(list)))
						return
					}
					a := list[0]
					ps := partitionsOf(t, a)
					var sum int64
					for _, p := range ps {
						sum += p.Rows
						if p.BuildUUID != a.BuildUUID {
							bad.Store(fmt.Sprintf("active %s lists an object of %s", a.BuildUUID, p.BuildUUID))
						}
					}
					if len(ps) == 0 || sum != a.Rows || a.EndedAt == nil || a.Rows == 0 {
						bad.Store(fmt.Sprintf("half a build: %+v", a))
						return
					}
				}
			}()
		}
		for i := range 15 {
			b, err := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, s, b.BuildUUID, "w1", int64(i+4)); got.Status != api.BuildActive {
				t.Fatalf("build %d is %s", i, got.Status)
			}
		}
		// Let the readers overlap the last promotion too.
		target := reads.Load() + 50
		wait.Until(t, waitLong, "the readers to read on", func() bool { return reads.Load() >= target || bad.Load() != nil })
		cancel()
		wg.Wait()
		if v := bad.Load(); v != nil {
			t.Fatal(v)
		}
		if a := f.active(); len(a) != 1 || a[0].Rows != 18 {
			t.Fatalf("final active = %+v, want the last build (18 rows)", a)
		}
	})
}

// A build that finishes after a newer one was promoted never replaces it.
func TestLateOlderBuildNeverWins(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true})
		q, _ := s.ScheduleOnce(t.Context())
		older := q[0]
		if _, err := s.Claim(t.Context(), older.BuildUUID, "slow", 0); err != nil {
			t.Fatal(err)
		}
		// Another build of the same definition, queued later, finishes first.
		f.clock.Add(time.Second)
		newer := store.PreAggBuild{BuildUUID: "newer", ProjectID: f.project.ProjectID, Model: "orders", PreAggregate: "daily",
			DefHash: older.DefHash, Status: api.BuildQueued, Trigger: builds.TriggerManual, CreatedAt: f.clock.Now(), UpdatedAt: f.clock.Now()}
		if err := f.st.Do(t.Context(), 0, func(ctx context.Context, tx store.Tx) error { return tx.BuildInsert(ctx, newer) }); err != nil {
			t.Fatal(err)
		}
		run(t, s, "newer", "fast", 8)
		b, err := s.Complete(t.Context(), older.BuildUUID, "slow", 0, api.BuildComplete{Partitions: parts(older.BuildUUID, 3, "")})
		if err != nil || b.Status != api.BuildSuperseded {
			t.Fatalf("late complete = %s, %v; want superseded", b.Status, err)
		}
		if a := f.active(); len(a) != 1 || a[0].BuildUUID != "newer" {
			t.Fatalf("active = %+v, want newer", a)
		}
	})
}

// Cron fires exactly once per due time, even with two services on one
// database running their passes at the same moment; a catch-up after
// downtime fires once.
func TestCronOncePerDueTimeTwoServices(t *testing.T) {
	t.Parallel()
	d1, d2 := twoDrivers(t)
	f1 := newFxOn(t, d1)
	f2 := &fx{t: t, st: store.New(d2, store.Options{}), clock: f1.clock, project: f1.project, conn: f1.conn}
	t.Cleanup(func() { _ = f2.st.Close() })
	f1.putModel(orders(semantic.Refresh{Cron: "0 * * * *"}))
	s1 := f1.service(builds.Config{NATSEnabled: true})
	s2 := f2.service(builds.Config{NATSEnabled: true})

	both := func() []store.PreAggBuild {
		t.Helper()
		var mu sync.Mutex
		var all []store.PreAggBuild
		var wg sync.WaitGroup
		for _, s := range []*builds.Service{s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q, err := s.ScheduleOnce(t.Context())
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				all = append(all, q...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return all
	}
	// The schedule's first passes: one definition build; the cron time is
	// recorded, not fired.
	first := both()
	for range 3 {
		first = append(first, both()...)
	}
	if got := triggers(first); !slices.Equal(got, []string{builds.TriggerDefinition}) {
		t.Fatalf("first passes queued %v, want one definition build", got)
	}
	run(t, s1, first[0].BuildUUID, "w1", 4)

	f1.clock.Set(time.Date(2024, 1, 10, 10, 59, 59, 0, time.UTC))
	if q := both(); len(q) != 0 {
		t.Fatalf("before the due time: %v", triggers(q))
	}
	f1.clock.Set(time.Date(2024, 1, 10, 11, 0, 0, 0, time.UTC))
	due := both()
	f1.clock.Add(30 * time.Second)
	due = append(due, both()...)
	if got := triggers(due); !slices.Equal(got, []string{builds.TriggerCron}) {
		t.Fatalf("at 11:00 the passes queued %v, want one cron build", got)
	}
	run(t, s2, due[0].BuildUUID, "w2", 5)

	// Down from 11:00:30 to 13:05: 12:00 and 13:00 were missed; one
	// catch-up build, then nothing until 14:00.
	f1.clock.Set(time.Date(2024, 1, 10, 13, 5, 0, 0, time.UTC))
	late := both()
	f1.clock.Add(time.Minute)
	late = append(late, both()...)
	if got := triggers(late); !slices.Equal(got, []string{builds.TriggerCron}) {
		t.Fatalf("after downtime the passes queued %v, want one cron build", got)
	}
	run(t, s1, late[0].BuildUUID, "w1", 6)
	f1.clock.Set(time.Date(2024, 1, 10, 13, 59, 0, 0, time.UTC))
	if q := both(); len(q) != 0 {
		t.Fatalf("before 14:00: %v", triggers(q))
	}
	l, err := s1.List(t.Context(), "shop")
	if err != nil || l.PreAggregates[0].NextRefreshAt == nil || !l.PreAggregates[0].NextRefreshAt.Equal(time.Date(2024, 1, 10, 14, 0, 0, 0, time.UTC)) {
		t.Fatalf("list = %+v, %v; want nextRefreshAt 14:00", l, err)
	}
	if n := len(f1.builds()); n != 3 {
		t.Fatalf("%d builds in all, want 3", n)
	}
}

// Concurrent lost-object reports (many queries failing over at once)
// start exactly one "missing" rebuild, and the active build stays.
func TestObjectLostOneRebuild(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true})
		q, _ := s.ScheduleOnce(t.Context())
		good := run(t, s, q[0].BuildUUID, "w1", 5)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.OnObjectLost(t.Context(), f.project.ProjectID, "orders", "daily"); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		var missing []store.PreAggBuild
		for _, b := range f.builds() {
			if b.Trigger == builds.TriggerMissing {
				missing = append(missing, b)
			}
		}
		if len(missing) != 1 || missing[0].Status != api.BuildQueued || missing[0].Rebuild != nil && string(missing[0].Rebuild) != "null" {
			t.Fatalf("missing builds = %+v, want one queued full rebuild", missing)
		}
		if a := f.active(); len(a) != 1 || a[0].BuildUUID != good.BuildUUID {
			t.Fatalf("active = %+v", a)
		}
	})
}

// A worker that dies mid-build (its heartbeats stop) has the build
// re-queued and notified again; the old build keeps serving meanwhile, the
// dead worker's late report is refused, and another worker completes it.
func TestWorkerDeathRequeuesBuild(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true, StaleWorkerAfter: 30 * time.Second})
		q, _ := s.ScheduleOnce(t.Context())
		good := run(t, s, q[0].BuildUUID, "w1", 5)
		b, _ := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		if _, err := s.Claim(t.Context(), b.BuildUUID, "doomed", 0); err != nil {
			t.Fatal(err)
		}
		f.drainOutbox()
		// Alive: heartbeats keep it.
		for range 3 {
			f.clock.Add(20 * time.Second)
			if _, err := s.Heartbeat(t.Context(), b.BuildUUID, "doomed", 0); err != nil {
				t.Fatal(err)
			}
			if n, _, err := s.ReapOnce(t.Context(), nil); err != nil || n != 0 {
				t.Fatalf("reap with a live worker = %d, %v", n, err)
			}
		}
		// Dead: no heartbeat for 31 s.
		f.clock.Add(31 * time.Second)
		n, _, err := s.ReapOnce(t.Context(), nil)
		if err != nil || n != 1 {
			t.Fatalf("reap = %d, %v; want 1 re-queued", n, err)
		}
		if got := f.build(b.BuildUUID); got.Status != api.BuildQueued || got.WorkerID != "" {
			t.Fatalf("build after reap = %s worker %q", got.Status, got.WorkerID)
		}
		msgs := f.outbox()
		if len(msgs) != 1 || msgs[0].MsgID != b.BuildUUID+"#2" {
			t.Fatalf("outbox = %+v, want one re-notification %s#2", msgs, b.BuildUUID)
		}
		if a := f.active(); len(a) != 1 || a[0].BuildUUID != good.BuildUUID {
			t.Fatalf("active during the retry = %+v, want %s", a, good.BuildUUID)
		}
		if _, err := s.Heartbeat(t.Context(), b.BuildUUID, "doomed", 0); !errors.Is(err, builds.ErrNotHolder) {
			t.Fatalf("dead worker's heartbeat = %v, want ErrNotHolder", err)
		}
		if got := run(t, s, b.BuildUUID, "w2", 6); got.Status != api.BuildActive {
			t.Fatalf("retried build is %s", got.Status)
		}
		if _, err := s.Complete(t.Context(), b.BuildUUID, "doomed", 0, api.BuildComplete{Partitions: parts(b.BuildUUID, 1, "")}); !errors.Is(err, builds.ErrNotHolder) {
			t.Fatalf("dead worker's late complete = %v, want ErrNotHolder", err)
		}
		if a := f.active(); len(a) != 1 || a[0].BuildUUID != b.BuildUUID || a[0].Rows != 6 || a[0].WorkerID != "w2" {
			t.Fatalf("active = %+v, want the retried build by w2", a)
		}
	})
}

// A queued build whose notification was lost is notified again (once per
// interval), with a fresh message id; a claimed one is not.
func TestLostNotificationRepublished(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		f.putModel(orders(semantic.Refresh{}))
		s := f.service(builds.Config{NATSEnabled: true, RedeliverAfter: 30 * time.Second})
		q, _ := s.ScheduleOnce(t.Context())
		f.drainOutbox() // published, then lost with a NATS restart
		f.clock.Add(10 * time.Second)
		if _, n, err := s.ReapOnce(t.Context(), nil); err != nil || n != 0 {
			t.Fatalf("early reap = %d, %v", n, err)
		}
		f.clock.Add(21 * time.Second)
		if _, n, err := s.ReapOnce(t.Context(), nil); err != nil || n != 1 {
			t.Fatalf("reap = %d, %v; want 1 re-notified", n, err)
		}
		msgs := f.outbox()
		if len(msgs) != 1 || msgs[0].MsgID != q[0].BuildUUID+"#2" {
			t.Fatalf("outbox = %+v", msgs)
		}
		if job, err := bus.DecodePreAggBuildJob(msgs[0].Payload); err != nil || job.Payload.MaterializationUUID != q[0].BuildUUID || job.JobID != msgs[0].MsgID {
			t.Fatalf("job = %+v, %v", job, err)
		}
		if _, n, _ := s.ReapOnce(t.Context(), nil); n != 0 {
			t.Fatalf("an immediate second reap re-notified %d", n)
		}
		// A backlog in the stream: the build is probably just waiting.
		f.clock.Add(31 * time.Second)
		backlog := func(context.Context) (int64, error) { return 5, nil }
		if _, n, _ := s.ReapOnce(t.Context(), backlog); n != 0 {
			t.Fatalf("reap with a backlog re-notified %d", n)
		}
		if _, err := s.Claim(t.Context(), q[0].BuildUUID, "w1", 0); err != nil {
			t.Fatal(err)
		}
		f.clock.Add(time.Hour)
		if _, n, _ := s.ReapOnce(t.Context(), func(context.Context) (int64, error) { return 0, nil }); n != 0 {
			t.Fatalf("reap of a building build re-notified %d", n)
		}
	})
}

// Claim hands out the plan's inputs; a second claim, or a claim of an
// unknown build, is refused.
func TestClaim(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	m := orders(semantic.Refresh{KeySQL: "select max(id) from orders"})
	m.PreAggregates[0].MaxRows = 77
	f.putModel(m)
	s := f.service(builds.Config{NATSEnabled: true})
	b, err := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(t.Context(), b.BuildUUID, "w1", 0)
	if err != nil {
		t.Fatal(err)
	}
	want, err := preagg.Plan(&m, &m.PreAggregates[0], semantic.Postgres, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Plan != want || c.MaxRows != 77 || c.ObjectPrefix != "shop/orders/daily/"+b.BuildUUID || c.KeySQL != m.PreAggregates[0].Refresh.KeySQL ||
		c.Warehouse.URL != f.conn.URL || c.Project != "shop" || len(c.Keep) != 0 {
		t.Fatalf("claimed = %+v", c)
	}
	if _, err := s.Claim(t.Context(), b.BuildUUID, "w2", 0); !errors.Is(err, builds.ErrNotClaimable) {
		t.Fatalf("second claim = %v, want ErrNotClaimable", err)
	}
	if _, err := s.Claim(t.Context(), "nope", "w2", 0); !errors.Is(err, builds.ErrBuildNotFound) {
		t.Fatalf("claim of an unknown build = %v", err)
	}
	if _, err := s.Trigger(t.Context(), "shop", "orders", "weekly", builds.TriggerManual); !errors.Is(err, builds.ErrPreAggNotFound) {
		t.Fatalf("trigger of an undeclared pre-aggregate = %v", err)
	}
	if _, err := s.Trigger(t.Context(), "shop", "customers", "daily", builds.TriggerManual); !errors.Is(err, builds.ErrModelNotFound) {
		t.Fatalf("trigger on an unknown model = %v", err)
	}
	// A manual refresh while one is pending returns that one.
	again, err := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
	if err != nil || again.BuildUUID != b.BuildUUID {
		t.Fatalf("refresh while building = %s, %v; want %s", again.BuildUUID, err, b.BuildUUID)
	}
	off := builds.New(builds.Config{Enabled: false}, f.st, nil, projects{st: f.st}, quiet, nil)
	if _, err := off.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual); !errors.Is(err, builds.ErrDisabled) {
		t.Fatalf("trigger with pre-aggregates disabled = %v", err)
	}
}
