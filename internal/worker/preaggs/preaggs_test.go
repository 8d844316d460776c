package preaggs_test

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/preaggtest"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker/preaggs"
)

// monthly asks for what daily_status can answer at a coarser grain.
func monthly() semantic.MetricQuery {
	return semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_created_at_month", "orders_status"},
		Metrics: []string{"orders_order_count", "orders_revenue", "orders_avg_amount"}, Limit: 5000}
}

// answer submits q and waits for its result.
func answer(t *testing.T, s *preaggtest.Stack, q semantic.MetricQuery, usePreAgg bool) (api.Submitted, api.QueryPage) {
	t.Helper()
	in := api.MetricQuerySubmit{Query: q, InvalidateCache: true}
	if !usePreAgg {
		in.UsePreAggregates = &usePreAgg
	}
	sub, err := s.H.API.MetricQuerySubmit(t.Context(), s.Project, in)
	if err != nil {
		t.Fatal(err)
	}
	page := s.Wait(t, sub.QueryUUID)
	if page.Status != api.QueryReady {
		t.Fatalf("query %s ended %s: %s", sub.QueryUUID, page.Status, page.Error)
	}
	return sub, page
}

// sameAnswer compares two results cell by cell, numbers within 1e-9
// relative (a sum of decimals in DuckDB's doubles).
func sameAnswer(t *testing.T, got, want api.QueryPage) {
	t.Helper()
	if len(got.Rows) == 0 || len(got.Rows) != len(want.Rows) || len(got.Columns) != len(want.Columns) {
		t.Fatalf("%d rows x %d columns, want %d x %d\ngot:\n%s\nwant:\n%s", len(got.Rows), len(got.Columns), len(want.Rows), len(want.Columns),
			preaggtest.Rows(got), preaggtest.Rows(want))
	}
	for i, c := range want.Columns {
		if got.Columns[i].Name != c.Name {
			t.Fatalf("column %d is %s, want %s", i, got.Columns[i].Name, c.Name)
		}
	}
	for r := range want.Rows {
		for _, c := range want.Columns {
			g, w := fmt.Sprint(got.Rows[r][c.Name]), fmt.Sprint(want.Rows[r][c.Name])
			gf, gerr := strconv.ParseFloat(g, 64)
			wf, werr := strconv.ParseFloat(w, 64)
			if gerr == nil && werr == nil {
				if math.Abs(gf-wf) > 1e-9*math.Max(1, math.Abs(wf)) {
					t.Fatalf("row %d %s = %s, want %s", r, c.Name, g, w)
				}
				continue
			}
			if g != w {
				t.Fatalf("row %d %s = %q, want %q\ngot:\n%s\nwant:\n%s", r, c.Name, g, w, preaggtest.Rows(got), preaggtest.Rows(want))
			}
		}
	}
}

// The worker builds the pre-aggregate its definition asks for, then serves
// a matching query from it, with the warehouse's answer.
func TestWorkerBuildsAndServes(t *testing.T) {
	t.Parallel()
	s := preaggtest.Start(t, preaggtest.Options{})
	b := s.WaitActive(t, "orders", "daily_status", "")
	if b.Rows == 0 || b.Bytes == 0 || len(b.Partitions) != 1 || b.BuiltAt == nil || b.DataAsOf == nil || !strings.HasPrefix(b.WorkerID, "pa-") {
		t.Fatalf("active build = %+v; want rows, bytes, one object, times, and our worker", b)
	}
	sub, hit := answer(t, s, monthly(), true)
	m := sub.CacheMetadata.PreAggregate
	if m == nil || !m.Hit || m.Name != "daily_status" || m.BuildUUID != b.BuildUUID {
		t.Fatalf("submit's preAggregate = %+v; want a hit on build %s", m, b.BuildUUID)
	}
	if cm := hit.CacheMetadata; cm == nil || cm.PreAggregate == nil || !cm.PreAggregate.Hit {
		t.Fatalf("poll's cacheMetadata = %+v; want the hit", cm)
	}
	sub, direct := answer(t, s, monthly(), false)
	if m := sub.CacheMetadata.PreAggregate; m == nil || m.Hit || m.Reason == nil || m.Reason.Code != api.PreAggMissBypassed {
		t.Fatalf("bypassed query's preAggregate = %+v", m)
	}
	sameAnswer(t, hit, direct)
}

// A build's Parquet lost from the object store is a miss, not an error:
// the worker hands the query back, the warehouse answers it, the reason
// says why, and a rebuild makes the pre-aggregate serve again.
func TestWorkerFallsBackWhenTheObjectIsGone(t *testing.T) {
	t.Parallel()
	s := preaggtest.Start(t, preaggtest.Options{})
	b := s.WaitActive(t, "orders", "daily_status", "")
	obs, err := s.H.JS.ObjectStore(t.Context(), s.H.Cfg.PreAgg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range b.Partitions {
		if err := obs.Delete(t.Context(), p.Object); err != nil {
			t.Fatalf("delete %s: %v", p.Object, err)
		}
	}
	sub, page := answer(t, s, monthly(), true)
	if m := sub.CacheMetadata.PreAggregate; m == nil || !m.Hit {
		t.Fatalf("submit's preAggregate = %+v; want a hit (the server cannot know the object is gone)", m)
	}
	cm := page.CacheMetadata
	if cm == nil || cm.PreAggregate == nil || cm.PreAggregate.Hit || cm.PreAggregate.Reason == nil || cm.PreAggregate.Reason.Code != api.PreAggMissObjectLost {
		t.Fatalf("poll's cacheMetadata = %+v; want a miss MATERIALIZATION_MISSING", cm)
	}
	_, direct := answer(t, s, monthly(), false)
	sameAnswer(t, page, direct)

	rebuilt := s.WaitActive(t, "orders", "daily_status", b.BuildUUID)
	if rebuilt.Trigger != "missing" {
		t.Fatalf("rebuild trigger = %q, want missing", rebuilt.Trigger)
	}
	if sub, _ := answer(t, s, monthly(), true); sub.CacheMetadata.PreAggregate == nil || sub.CacheMetadata.PreAggregate.BuildUUID != rebuilt.BuildUUID {
		t.Fatalf("after the rebuild: %+v; want a hit on %s", sub.CacheMetadata.PreAggregate, rebuilt.BuildUUID)
	}
}

// A build over max_rows fails on the worker; the failure is reported with
// its reason, and the active build keeps serving.
func TestWorkerFailedBuildKeepsTheActiveOne(t *testing.T) {
	t.Parallel()
	s := preaggtest.Start(t, preaggtest.Options{})
	b := s.WaitActive(t, "orders", "daily_status", "")
	// max_rows is not part of the definition: the active build still
	// serves, and the next build must fit in 5 rows.
	if _, err := s.H.API.ModelsPut(t.Context(), s.Project, []byte(strings.Replace(preaggtest.Models, "granularity: day", "granularity: day\n        max_rows: 5", 1))); err != nil {
		t.Fatal(err)
	}
	st, err := s.H.API.PreAggRefresh(t.Context(), s.Project, "orders", "daily_status")
	if err != nil {
		t.Fatal(err)
	}
	failed := s.WaitBuild(t, st.BuildUUID)
	if failed.Status != api.BuildFailed || !strings.Contains(failed.Error, "max_rows") {
		t.Fatalf("build %s = %s %q; want failed over max_rows", failed.BuildUUID, failed.Status, failed.Error)
	}
	p := s.Info(t, "orders", "daily_status")
	if p.Active == nil || p.Active.BuildUUID != b.BuildUUID || p.LastError == "" {
		t.Fatalf("after the failure: active %+v, last error %q; want %s still active and the error shown", p.Active, p.LastError, b.BuildUUID)
	}
	if sub, _ := answer(t, s, monthly(), true); sub.CacheMetadata.PreAggregate == nil || sub.CacheMetadata.PreAggregate.BuildUUID != b.BuildUUID {
		t.Fatalf("after the failure: %+v; want a hit on %s", sub.CacheMetadata.PreAggregate, b.BuildUUID)
	}
}

// A worker that stops mid-build (its grace too short to finish) gives the
// build up: the server re-queues it once the heartbeats stop, another
// worker builds it, and the previous build serves until then.
func TestBuildOfAStoppedWorkerIsRetried(t *testing.T) {
	t.Parallel()
	slow := strings.Replace(preaggtest.Models, "    table: orders\n", "    sql: \"select o.* from orders o cross join (select pg_sleep(3)) s\"\n", 1)
	s := preaggtest.Start(t, preaggtest.Options{Models: slow, NoPreAggWorker: true, Server: func(c *config.Server) { c.Query.StaleWorker = 5 * time.Second }})
	first := "pa-first-" + t.Name()
	stop := s.StartPreAggWorker(t, func(c *preaggs.Config) { c.WorkerID, c.ShutdownGrace = first, 50*time.Millisecond })
	old := s.WaitActive(t, "orders", "daily_status", "")

	st, err := s.H.API.PreAggRefresh(t.Context(), s.Project, "orders", "daily_status")
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, func() error {
		b, err := s.H.API.PreAggBuild(t.Context(), s.Project, st.BuildUUID)
		if err == nil && (b.Status != api.BuildBuilding || b.WorkerID != first) {
			err = fmt.Errorf("build %s is %s by %q", b.BuildUUID, b.Status, b.WorkerID)
		}
		return err
	})
	stop()
	second := "pa-second-" + t.Name()
	s.StartPreAggWorker(t, func(c *preaggs.Config) { c.WorkerID = second })
	// The retry cannot be done before the heartbeats are stale (5 s; the
	// worker beats every 2 s) and its warehouse query (3 s): until then
	// the old build serves.
	if sub, _ := answer(t, s, monthly(), true); sub.CacheMetadata.PreAggregate == nil || sub.CacheMetadata.PreAggregate.BuildUUID != old.BuildUUID {
		t.Fatalf("mid-build: %+v; want the old build %s serving", sub.CacheMetadata.PreAggregate, old.BuildUUID)
	}
	b := s.WaitActive(t, "orders", "daily_status", old.BuildUUID)
	if b.BuildUUID != st.BuildUUID || b.WorkerID != second {
		t.Fatalf("active build %s by %q; want the retried %s by %s", b.BuildUUID, b.WorkerID, st.BuildUUID, second)
	}
}
