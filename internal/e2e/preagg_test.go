package e2e

// Pre-aggregates end to end (issue 11's "Must show"): differential checks
// through the API on both paths and both warehouses, a pre-aggregate worker
// SIGKILLed mid-build, a NATS restart with builds queued and running, and
// the miss reasons as a client sees them.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/wait"
)

// paBuildTimeout bounds waiting for builds of the small fact tables under
// -race on a shared 2-core machine.
const paBuildTimeout = 120 * time.Second

// Every random metric query is answered twice, from whatever the matcher
// picks and with pre-aggregates bypassed (the warehouse); when the first is
// a hit, both answers must be equal. On both paths, on both warehouses.
func TestPreAggDifferential(t *testing.T) {
	t.Parallel()
	queries, rows := 40, 2000
	if !raceEnabled {
		queries, rows = 80, 4000
	}
	facts := paFacts(rows, 11)
	for _, path := range []paPath{pathInProcess, pathNATS} {
		for _, wh := range []string{"duckdb", "postgres"} {
			t.Run(string(path)+"/"+wh, func(t *testing.T) {
				t.Parallel()
				var conn api.WarehouseConn
				if wh == "duckdb" {
					conn = seedDuckDBWarehouse(t, facts)
				} else {
					conn, _ = seedPostgresWarehouse(t, facts)
				}
				c := newPreAggCluster(t, path, 1)
				project := c.preAggProject(conn, paModel("sales", "table: facts"))
				active := c.waitActive(project, paNames(), paBuildTimeout)
				for name, b := range active {
					if b.Rows <= 0 || len(b.Partitions) == 0 || b.BuiltAt == nil || b.DataAsOf == nil {
						t.Fatalf("active build of %s: %s; want rows, objects, builtAt and dataAsOf", name, jsonString(b))
					}
				}
				hits := c.differential(project, "sales", queries, 100+uint64(len(path)+len(wh)), active)
				t.Logf("%s/%s outcomes: %v", path, wh, hits)
				total, served := 0, 0
				for k, n := range hits {
					if !strings.HasPrefix(k, "miss:") {
						total += n
						served++
					}
				}
				if total < queries/4 || served < 3 {
					t.Fatalf("%d hits on %d pre-aggregates out of %d queries (%v): want at least %d hits on 3 or more", total, served, queries, hits, queries/4)
				}
				if total == queries {
					t.Fatalf("every query was a hit (%v): the misses of the generator were not exercised", hits)
				}
			})
		}
	}
}

// paHitQuery is answered by daily_region_channel (the smallest that fits).
func paHitQuery(model string, limit int) semantic.MetricQuery {
	return semantic.MetricQuery{ExploreName: model, Dimensions: []string{model + "_region", model + "_created_at_month"},
		Metrics: []string{model + "_revenue", model + "_min_amount"}, Limit: limit}
}

// A pre-aggregate worker is SIGKILLed while it builds. The build is
// re-queued and finished by the other worker while the previous active
// build keeps serving hits; at the end exactly one build is active.
func TestPreAggWorkerKilledMidBuild(t *testing.T) {
	t.Parallel()
	conn, slow := seedPostgresWarehouse(t, paFacts(2000, 21))
	c := newPreAggCluster(t, pathNATS, 2, "MILLRACE_QUERY_STALE_WORKER_SECONDS=8")
	// The model's rows come through a one-row table whose secs the
	// test sets: builds (and warehouse queries) sleep that long.
	project := c.preAggProject(conn, paModel("sales", slowFrom(slow), "daily_region_channel"))
	const name = "daily_region_channel"
	old := c.waitActive(project, []string{name}, paBuildTimeout)[name]
	ctx := t.Context()

	setSlow(t, conn, slow, 60)
	ref, err := c.api.PreAggRefresh(ctx, project, "sales", name)
	if err != nil {
		t.Fatal(err)
	}
	var held api.PreAggBuild
	wait.For(t, 60*time.Second, func() error {
		b, err := c.api.PreAggBuild(ctx, project, ref.BuildUUID)
		if err != nil {
			return err
		}
		if b.Status != api.BuildBuilding || b.WorkerID == "" {
			return fmt.Errorf("build %s is %s (worker %q)", b.BuildUUID, b.Status, b.WorkerID)
		}
		held = b
		return nil
	})
	var victim *proctest.Proc
	for _, p := range c.procs {
		if p.Name() == "preagg-worker-"+held.WorkerID {
			victim = p
		}
	}
	if victim == nil {
		t.Fatalf("build %s is held by %q, none of the pre-aggregate workers started", held.BuildUUID, held.WorkerID)
	}
	victim.Signal(syscall.SIGKILL)
	_ = victim.Wait(t, 10*time.Second)
	setSlow(t, conn, slow, 0) // the retry is quick

	// While the build is being retried, the old build serves.
	servedDuring := 0
	want := c.metricQuery(project, paHitQuery("sales", 500), true)
	for i := range 8 {
		r := c.metricQuery(project, paHitQuery("sales", 100+i), false)
		if err := sameRows(r.page, slicePage(want.page, 100+i)); err != nil {
			t.Fatalf("a hit while the build is retried differs from the warehouse: %v", err)
		}
		info := c.preAggInfo(project, name)
		if info.Active == nil || info.Active.BuildUUID != old.BuildUUID {
			break // the retry finished: later queries may use it
		}
		if !r.meta.Hit || r.meta.BuildUUID != old.BuildUUID {
			t.Fatalf("during the retry a query got %s, want a hit on the old build %s", jsonString(r.meta), old.BuildUUID)
		}
		servedDuring++
	}
	if servedDuring == 0 {
		t.Fatal("the retry finished before any query could check that the old build kept serving")
	}

	// The build is retried: the same one re-queued and finished by the
	// other worker, or a newer one.
	var now api.PreAggInfo
	wait.For(t, paBuildTimeout, func() error {
		now = c.preAggInfo(project, name)
		if now.Active == nil || now.Active.BuildUUID == old.BuildUUID {
			return fmt.Errorf("still serving the old build; last: %s", jsonString(now.Last))
		}
		return nil
	})
	if now.Active.BuildUUID == ref.BuildUUID && now.Active.WorkerID == held.WorkerID {
		t.Fatalf("build %s completed by the killed worker %s", ref.BuildUUID, held.WorkerID)
	}
	if now.Active.BuildUUID == ref.BuildUUID {
		t.Logf("build %s was re-queued and finished by %s after %s was killed; %d queries meanwhile were served by the old build",
			ref.BuildUUID, now.Active.WorkerID, held.WorkerID, servedDuring)
	} else {
		t.Logf("a new build %s (trigger %s) replaced the killed %s; %d queries meanwhile were served by the old build",
			now.Active.BuildUUID, now.Active.Trigger, ref.BuildUUID, servedDuring)
	}
	builds, err := c.api.PreAggBuilds(ctx, project, "sales", name, 50)
	if err != nil {
		t.Fatal(err)
	}
	activeN := 0
	for _, b := range builds {
		if b.Status == api.BuildActive {
			activeN++
		}
		if b.BuildUUID == old.BuildUUID && b.Status != api.BuildSuperseded {
			t.Fatalf("the old build is %s, want superseded", b.Status)
		}
	}
	if activeN != 1 {
		t.Fatalf("%d active builds of %s, want exactly 1: %s", activeN, name, jsonString(builds))
	}
	r := c.metricQuery(project, paHitQuery("sales", 500), false)
	if !r.meta.Hit || r.meta.BuildUUID != now.Active.BuildUUID {
		t.Fatalf("after the retry: %s, want a hit on build %s", jsonString(r.meta), now.Active.BuildUUID)
	}
	if err := sameRows(r.page, want.page); err != nil {
		t.Fatalf("the retried build's answer differs from the warehouse: %v", err)
	}
}

// slicePage is p's first n rows.
func slicePage(p api.QueryPage, n int) api.QueryPage {
	p.Rows = p.Rows[:min(n, len(p.Rows))]
	return p
}

func (c *cluster) preAggInfo(project, name string) api.PreAggInfo {
	c.t.Helper()
	list, err := c.api.PreAggregates(c.t.Context(), project)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, p := range list {
		if p.Name == name {
			return p
		}
	}
	c.t.Fatalf("pre-aggregate %s is not listed: %s", name, jsonString(list))
	return api.PreAggInfo{}
}

// NATS restarts (memory storage: the stream and its jobs are gone) while
// one build runs and another is queued: neither is lost, both end active
// and serve.
func TestPreAggNATSRestartLosesNoBuild(t *testing.T) {
	t.Parallel()
	conn, slow := seedPostgresWarehouse(t, paFacts(2000, 31))
	setSlow(t, conn, slow, 3)
	c := newPreAggCluster(t, pathNATS, 0, "PRE_AGGREGATE_BUILD_CONCURRENCY=1")
	names := []string{"daily_region_channel", "by_channel"}
	project := c.preAggProject(conn, paModel("sales", slowFrom(slow), names...))
	ctx := t.Context()
	// No pre-aggregate worker yet: both builds wait, published.
	wait.For(t, 60*time.Second, func() error {
		for _, n := range names {
			if info := c.preAggInfo(project, n); info.Last == nil || info.Last.Status != api.BuildQueued {
				return fmt.Errorf("%s has no queued build: %s", n, jsonString(info.Last))
			}
		}
		return nil
	})
	c.startPreAggWorker("pa-1") // one build at a time
	var before []api.PreAggBuild
	wait.For(t, 60*time.Second, func() error {
		bs, err := c.api.PreAggBuilds(ctx, project, "sales", "", 10)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(bs, func(b api.PreAggBuild) bool { return b.Status == api.BuildBuilding }) {
			return fmt.Errorf("no build is running: %s", jsonString(bs))
		}
		before = bs
		return nil
	})
	// One runs (3 s of warehouse sleep), the other waits in the stream.
	st := map[api.BuildStatus]int{}
	for _, b := range before {
		st[b.Status]++
	}
	if st[api.BuildBuilding] != 1 || st[api.BuildQueued] != 1 {
		t.Fatalf("at the restart the builds are %v, want one building and one queued: %s", st, jsonString(before))
	}
	if err := c.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	active := c.waitActive(project, names, paBuildTimeout)
	setSlow(t, conn, slow, 0)
	for _, q := range []semantic.MetricQuery{
		paHitQuery("sales", 500),
		{ExploreName: "sales", Dimensions: []string{"sales_channel"}, Metrics: []string{"sales_orders", "sales_avg_amount"}},
	} {
		r := c.metricQuery(project, q, false)
		if !r.meta.Hit || r.meta.BuildUUID != active[r.meta.Name].BuildUUID {
			t.Fatalf("after the restart %s got %s, want a hit on an active build", jsonString(q), jsonString(r.meta))
		}
		if err := sameRows(r.page, c.metricQuery(project, q, true).page); err != nil {
			t.Fatalf("after the restart %s answers differently from the warehouse: %v", jsonString(q), err)
		}
	}
}

// envOf is the value of key in c's environment.
func (c *cluster) envOf(key string) string {
	v := ""
	for _, kv := range c.env {
		if x, ok := strings.CutPrefix(kv, key+"="); ok {
			v = x
		}
	}
	return v
}

// wantMiss submits q and checks the submit's reply names the miss code
// (and field, when given).
func (c *cluster) wantMiss(project string, q semantic.MetricQuery, code, field string) api.PreAggregateMeta {
	c.t.Helper()
	sub, err := c.api.MetricQuerySubmit(c.t.Context(), project, api.MetricQuerySubmit{Query: q})
	if err != nil {
		c.t.Fatalf("submit %s: %v", jsonString(q), err)
	}
	m := sub.CacheMetadata.PreAggregate
	if m == nil || m.Hit || m.Reason == nil || m.Reason.Code != code || (field != "" && m.Reason.FieldID != field) || m.Reason.Message == "" {
		c.t.Fatalf("%s: cacheMetadata.preAggregate = %s, want a miss %s (field %q) with a message", jsonString(q), jsonString(m), code, field)
	}
	return *m
}

// sideModel has pre-aggregates that make a filter scope and staleness the
// most specific miss reasons, and bareModel has none.
const sideModel = `  - name: side
    table: facts
    dimensions:
      - {name: region, type: string}
      - {name: channel, type: string}
      - {name: created_at, type: timestamp}
    metrics:
      - {name: orders, type: count}
      - {name: revenue, type: sum, sql: amount}
    pre_aggregates:
      - name: web_only
        dimensions: [region]
        metrics: [orders]
        filters:
          - {field: channel, operator: equals, values: [web]}
      - name: fresh_daily
        dimensions: [channel]
        metrics: [revenue]
        time_dimension: created_at
        granularity: day
        refresh:
          max_staleness: 3s
  - name: bare
    table: facts
    dimensions:
      - {name: region, type: string}
    metrics:
      - {name: orders, type: count}
`

// Every miss reason through the API, on the in-process path (dir
// storage): before the first build, bypassed, each of the matcher's, a
// deleted Parquet file (answered by the warehouse, then rebuilt), and a
// server with pre-aggregates disabled.
func TestPreAggMissReasons(t *testing.T) {
	t.Parallel()
	conn, slow := seedPostgresWarehouse(t, paFacts(2000, 41))
	setSlow(t, conn, slow, 4)
	c := newPreAggCluster(t, pathInProcess, 0)
	doc := paModel("sales", slowFrom(slow)) + sideModel
	project := c.preAggProject(conn, doc)
	ctx := t.Context()

	// The first builds take 4 s: until then there is no active build.
	m := c.wantMiss(project, paHitQuery("sales", 500), api.PreAggMissNoBuild, "")
	if m.Reason.PreAggregate == "" {
		t.Fatalf("NO_ACTIVE_MATERIALIZATION names no pre-aggregate: %s", jsonString(m))
	}
	setSlow(t, conn, slow, 0)
	c.waitActive(project, paNames(), paBuildTimeout)
	c.waitActive(project, []string{"web_only", "fresh_daily"}, paBuildTimeout)

	hit := c.metricQuery(project, paHitQuery("sales", 500), false)
	if !hit.meta.Hit || hit.meta.Name != "daily_region_channel" {
		t.Fatalf("the hit query got %s, want a hit on daily_region_channel", jsonString(hit.meta))
	}
	warehouse := c.metricQuery(project, paHitQuery("sales", 500), true)
	if warehouse.meta.Hit || warehouse.meta.Reason == nil || warehouse.meta.Reason.Code != api.PreAggMissBypassed {
		t.Fatalf("usePreAggregates false got %s, want BYPASSED", jsonString(warehouse.meta))
	}
	if err := sameRows(hit.page, warehouse.page); err != nil {
		t.Fatal(err)
	}

	c.wantMiss(project, semantic.MetricQuery{ExploreName: "sales", Dimensions: []string{"sales_qty"}, Metrics: []string{"sales_orders"}},
		api.PreAggMissFieldNotCovered, "sales_qty")
	c.wantMiss(project, semantic.MetricQuery{ExploreName: "sales", Dimensions: []string{"sales_created_at"}, Metrics: []string{"sales_orders"}},
		api.PreAggMissGrain, "sales_created_at")
	c.wantMiss(project, semantic.MetricQuery{ExploreName: "sales", Dimensions: []string{"sales_region", "sales_created_at_year"}, Metrics: []string{"sales_customers"}},
		api.PreAggMissNonAdditive, "sales_customers")
	c.wantMiss(project, semantic.MetricQuery{ExploreName: "sales", Dimensions: []string{"sales_region"}, Metrics: []string{"sales_big_orders"},
		AdditionalMetrics: []semantic.AdditionalMetric{{Name: "big_orders", Type: semantic.MetricCount, SQL: "CASE WHEN amount > 100 THEN 1 END"}}},
		api.PreAggMissCustomSQL, "")
	c.wantMiss(project, semantic.MetricQuery{ExploreName: "side", Dimensions: []string{"side_region"}, Metrics: []string{"side_orders"}},
		api.PreAggMissFilterScope, "")
	c.wantMiss(project, semantic.MetricQuery{ExploreName: "bare", Dimensions: []string{"bare_region"}, Metrics: []string{"bare_orders"}},
		api.PreAggMissNone, "")
	// fresh_daily's data is older than its max_staleness 3 s soon after it
	// was built; then it is a miss that says so.
	stale := semantic.MetricQuery{ExploreName: "side", Dimensions: []string{"side_channel"}, Metrics: []string{"side_revenue"}}
	wait.For(t, 60*time.Second, func() error {
		sub, err := c.api.MetricQuerySubmit(ctx, project, api.MetricQuerySubmit{Query: stale})
		if err != nil {
			return err
		}
		if m := sub.CacheMetadata.PreAggregate; m == nil || m.Hit || m.Reason == nil || m.Reason.Code != api.PreAggMissStale {
			return fmt.Errorf("got %s, want BUILD_TOO_STALE", jsonString(m))
		}
		return nil
	})

	// The Parquet of the serving build disappears (and any local copy):
	// the query is answered by the warehouse, says why, and a rebuild
	// follows.
	lost := hit.meta.BuildUUID
	removed := removeFilesOf(t, c.envOf("PRE_AGGREGATE_DIR"), lost)
	removeFilesOf(t, c.envOf("PRE_AGGREGATE_CACHE_DIR"), lost)
	if removed == 0 {
		t.Fatalf("no file of build %s under PRE_AGGREGATE_DIR %s", lost, c.envOf("PRE_AGGREGATE_DIR"))
	}
	r := c.metricQuery(project, paHitQuery("sales", 499), false)
	if r.meta.Hit || r.meta.Reason == nil || r.meta.Reason.Code != api.PreAggMissObjectLost {
		t.Fatalf("with its Parquet deleted the query got %s, want a miss MATERIALIZATION_MISSING", jsonString(r.meta))
	}
	if err := sameRows(r.page, slicePage(warehouse.page, 499)); err != nil {
		t.Fatalf("the fallback's answer differs from the warehouse: %v", err)
	}
	var rebuilt api.PreAggInfo
	wait.For(t, paBuildTimeout, func() error {
		rebuilt = c.preAggInfo(project, "daily_region_channel")
		if rebuilt.Active == nil || rebuilt.Active.BuildUUID == lost {
			return fmt.Errorf("not rebuilt yet; last build: %s", jsonString(rebuilt.Last))
		}
		return nil
	})
	if rebuilt.Active.Trigger != "missing" {
		t.Fatalf("the rebuild's trigger is %q, want missing", rebuilt.Active.Trigger)
	}
	again := c.metricQuery(project, paHitQuery("sales", 498), false)
	if !again.meta.Hit || again.meta.BuildUUID != rebuilt.Active.BuildUUID {
		t.Fatalf("after the rebuild: %s, want a hit on build %s", jsonString(again.meta), rebuilt.Active.BuildUUID)
	}
	if err := sameRows(again.page, slicePage(warehouse.page, 498)); err != nil {
		t.Fatalf("the rebuilt pre-aggregate answers differently from the warehouse: %v", err)
	}

	// A server with PRE_AGGREGATES_ENABLED=false on the same database
	// (started last, once every query above has its answer: a starting
	// in-process server ends the queries it finds pending).
	wait.For(t, 60*time.Second, func() error {
		h, err := c.api.QueryHistory(ctx, project, 1, 500)
		if err != nil {
			return err
		}
		for _, q := range h.Queries {
			if q.Status != api.QueryReady {
				return fmt.Errorf("query %s is %s (%s)", q.QueryUUID, q.Status, q.Error)
			}
		}
		return nil
	})
	addr := proctest.FreeAddr(t)
	p := c.startEnv("server-disabled", []string{"MILLRACE_ADDR=" + addr, "SERVER_API_URL=http://" + addr, "MILLRACE_NODE_ID=2", "PRE_AGGREGATES_ENABLED=false"}, "server")
	off := client.New("http://" + addr)
	waitHealthyAt(t, p, off)
	sub, err := off.MetricQuerySubmit(ctx, project, api.MetricQuerySubmit{Query: paHitQuery("sales", 500)})
	if err != nil {
		t.Fatal(err)
	}
	if m := sub.CacheMetadata.PreAggregate; m == nil || m.Hit || m.Reason == nil || m.Reason.Code != api.PreAggMissDisabled {
		t.Fatalf("with PRE_AGGREGATES_ENABLED=false: %s, want PRE_AGGREGATES_DISABLED", jsonString(m))
	}
}

// removeFilesOf deletes every file under dir whose path names build and
// returns how many.
func removeFilesOf(t *testing.T, dir, build string) int {
	t.Helper()
	n := 0
	if dir == "" {
		return 0
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(path, build) {
			if err := os.Remove(path); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
