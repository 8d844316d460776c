package e2e

// Helpers of the pre-aggregate end-to-end tests: a seeded fact table in a
// DuckDB file or a PostgreSQL schema, a model with several pre-aggregates,
// random metric queries over it, and a cluster on either path (the server
// alone with NATS_ENABLED=false, or the server with a warehouse worker and
// pre-aggregate workers over NATS).

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // the DuckDB file warehouse is seeded by the test itself
	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// paPath is how a cluster runs pre-aggregates.
type paPath string

const (
	pathInProcess paPath = "inprocess" // NATS_ENABLED=false: the server builds and serves, dir storage
	pathNATS      paPath = "nats"      // warehouse + pre-aggregate workers, object store storage
)

// paModel is the model of the tests, over a table or SQL (from is its
// "table: ..." or "sql: ..." line), with the named pre-aggregates of
// paPreAggYAML (all of them when none are named). They cover the
// matcher's cases: a fine additive one, monthly ones with count_distinct
// and median (exact matches only), one scoped by a filter at week grain,
// and one without a time dimension.
func paModel(name, from string, only ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `models:
  - name: %s
    %s
    dimensions:
      - {name: region, type: string}
      - {name: channel, type: string}
      - {name: is_member, type: boolean}
      - {name: qty, type: number}
      - {name: created_at, type: timestamp}
    metrics:
      - {name: orders, type: count}
      - {name: revenue, type: sum, sql: amount}
      - {name: units, type: sum, sql: qty}
      - {name: avg_amount, type: average, sql: amount}
      - {name: min_amount, type: min, sql: amount}
      - {name: max_amount, type: max, sql: amount}
      - {name: customers, type: count_distinct, sql: customer_id}
      - {name: median_amount, type: median, sql: amount}
    pre_aggregates:
`, name, from)
	for _, p := range paPreAggs {
		if len(only) == 0 || slices.Contains(only, p.name) {
			b.WriteString(paPreAggYAML[p.name])
		}
	}
	return b.String()
}

var paPreAggYAML = map[string]string{
	"daily_region_channel": `      - name: daily_region_channel
        dimensions: [region, channel]
        metrics: [orders, revenue, units, avg_amount, min_amount, max_amount]
        time_dimension: created_at
        granularity: day
`,
	"monthly_member": `      - name: monthly_member
        dimensions: [is_member, region]
        metrics: [orders, revenue, avg_amount, customers]
        time_dimension: created_at
        granularity: month
`,
	"monthly_distinct": `      - name: monthly_distinct
        dimensions: [region]
        metrics: [customers, median_amount, orders]
        time_dimension: created_at
        granularity: month
`,
	"web_weekly": `      - name: web_weekly
        dimensions: [region]
        metrics: [orders, revenue]
        time_dimension: created_at
        granularity: week
        filters:
          - {field: channel, operator: equals, values: [web]}
`,
	"by_channel": `      - name: by_channel
        dimensions: [channel, is_member]
        metrics: [orders, units, avg_amount, min_amount, max_amount]
`,
}

// paPreAgg mirrors one of paModel's pre-aggregates for the generator.
type paPreAgg struct {
	name    string
	dims    []string
	metrics []string
	grain   semantic.Grain // "" without a time dimension
	scope   bool           // web_weekly: holds channel = web only
}

var paPreAggs = []paPreAgg{
	{name: "daily_region_channel", dims: []string{"region", "channel"}, metrics: []string{"orders", "revenue", "units", "avg_amount", "min_amount", "max_amount"}, grain: semantic.GrainDay},
	{name: "monthly_member", dims: []string{"is_member", "region"}, metrics: []string{"orders", "revenue", "avg_amount", "customers"}, grain: semantic.GrainMonth},
	{name: "monthly_distinct", dims: []string{"region"}, metrics: []string{"customers", "median_amount", "orders"}, grain: semantic.GrainMonth},
	{name: "web_weekly", dims: []string{"region"}, metrics: []string{"orders", "revenue"}, grain: semantic.GrainWeek, scope: true},
	{name: "by_channel", dims: []string{"channel", "is_member"}, metrics: []string{"orders", "units", "avg_amount", "min_amount", "max_amount"}},
}

var (
	paAllDims    = []string{"region", "channel", "is_member", "qty"}
	paAllMetrics = []string{"orders", "revenue", "units", "avg_amount", "min_amount", "max_amount", "customers", "median_amount"}
	paRegions    = []string{"north", "south", "east", "west", "Mid-West"}
	paChannels   = []string{"web", "store", "phone"}
)

func paNonAdditive(m string) bool { return m == "customers" || m == "median_amount" }

// factRow is one row of the seeded fact table.
type factRow struct {
	id         int
	region     *string
	channel    *string
	isMember   *bool
	qty        *int
	amount     *float64
	customerID int
	createdAt  time.Time
}

// paFacts returns n deterministic random rows over two years (2023 and
// 2024), with NULLs in every nullable column.
func paFacts(n int, seed uint64) []factRow {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	start := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	span := int64(2 * 365 * 24 * 3600)
	rows := make([]factRow, n)
	for i := range rows {
		f := factRow{id: i + 1, customerID: 1 + r.IntN(300), createdAt: start.Add(time.Duration(r.Int64N(span)) * time.Second)}
		if r.Float64() > 0.08 {
			s := paRegions[r.IntN(len(paRegions))]
			f.region = &s
		}
		if r.Float64() > 0.05 {
			s := paChannels[r.IntN(len(paChannels))]
			f.channel = &s
		}
		if r.Float64() > 0.1 {
			b := r.IntN(2) == 0
			f.isMember = &b
		}
		if r.Float64() > 0.07 {
			q := 1 + r.IntN(20)
			f.qty = &q
		}
		if r.Float64() > 0.06 {
			a := math.Round(r.Float64()*50000) / 100
			f.amount = &a
		}
		rows[i] = f
	}
	return rows
}

// factsSQL is the DDL and the INSERTs of rows into table, in SQL both
// PostgreSQL and DuckDB read.
func factsSQL(table string, rows []factRow) []string {
	stmts := []string{fmt.Sprintf(`CREATE TABLE %s (id INTEGER, region VARCHAR, channel VARCHAR, is_member BOOLEAN,
		qty INTEGER, amount DOUBLE PRECISION, customer_id INTEGER, created_at TIMESTAMP)`, table)}
	lit := func(p any) string {
		switch v := p.(type) {
		case *string:
			if v == nil {
				return "NULL"
			}
			return "'" + strings.ReplaceAll(*v, "'", "''") + "'"
		case *bool:
			if v == nil {
				return "NULL"
			}
			return fmt.Sprint(*v)
		case *int:
			if v == nil {
				return "NULL"
			}
			return fmt.Sprint(*v)
		case *float64:
			if v == nil {
				return "NULL"
			}
			return fmt.Sprintf("%.2f", *v)
		}
		panic(fmt.Sprintf("literal of %T", p))
	}
	for start := 0; start < len(rows); start += 500 {
		var b strings.Builder
		fmt.Fprintf(&b, "INSERT INTO %s VALUES ", table)
		for i, f := range rows[start:min(start+500, len(rows))] {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "(%d, %s, %s, %s, %s, %s, %d, TIMESTAMP '%s')", f.id, lit(f.region), lit(f.channel), lit(f.isMember),
				lit(f.qty), lit(f.amount), f.customerID, f.createdAt.Format("2006-01-02 15:04:05"))
		}
		stmts = append(stmts, b.String())
	}
	return stmts
}

// seedPostgresWarehouse creates a schema of the test's own holding facts,
// and a one-row table slow(secs) that slowFrom's model SQL sleeps by; it
// returns the connection (search_path selects the schema) and the slow
// table's name, unique to the test.
func seedPostgresWarehouse(t *testing.T, rows []factRow) (api.WarehouseConn, string) {
	t.Helper()
	url := pgtest.NewSchema(t)
	slow := "slow_" + randHex(6)
	execPG(t, url, append(factsSQL("facts", rows), "CREATE TABLE "+slow+" (secs DOUBLE PRECISION)", "INSERT INTO "+slow+" VALUES (0)")...)
	// A build killed mid-query leaves its backend sleeping; end it before
	// the schema is dropped (cleanups run last-registered first).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgtest.URL())
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE $1", "%"+slow+"%")
	})
	return api.WarehouseConn{Type: "postgres", URL: url}, slow
}

// slowFrom is the model's source line that reads facts through a sleep of
// the slow table's secs, so a test can make builds (and warehouse
// queries) last as long as it needs.
func slowFrom(slow string) string {
	return "sql: select f.* from facts f cross join (select pg_sleep(secs) from " + slow + ") z"
}

// setSlow sets how long the slow model's queries sleep.
func setSlow(t *testing.T, conn api.WarehouseConn, slow string, secs int) {
	t.Helper()
	execPG(t, conn.URL, fmt.Sprintf("UPDATE %s SET secs = %d", slow, secs))
}

// seedDuckDBWarehouse writes the facts into a DuckDB file and returns a
// read-only connection to it: the server and several workers open it at
// once, which DuckDB allows only to readers.
func seedDuckDBWarehouse(t *testing.T, rows []factRow) api.WarehouseConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "warehouse.duckdb")
	db, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range factsSQL("facts", rows) {
		if _, err := db.ExecContext(t.Context(), s); err != nil {
			db.Close()
			t.Fatalf("seed duckdb: %v\n%.300s", err, s)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return api.WarehouseConn{Type: "duckdb", URL: path + "?access_mode=read_only"}
}

func execPG(t *testing.T, url string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%.200s: %v", s, err)
		}
	}
}

// newPreAggCluster starts a deployment on path: the server alone
// (in-process builds and serving from a directory), or the server with
// NATS_ENABLED=true, a warehouse worker and preaggWorkers pre-aggregate
// workers (object store). extra env applies to every process.
func newPreAggCluster(t *testing.T, path paPath, preaggWorkers int, extra ...string) *cluster {
	t.Helper()
	c := newCluster(t, clusterOpts{})
	switch path {
	case pathInProcess:
		c.env = append(c.env, "NATS_ENABLED=false", "MILLRACE_SECRET_KEY="+testSecretKey, "MILLRACE_RESULTS_DIR="+t.TempDir(),
			"PRE_AGGREGATE_STORAGE=dir", "PRE_AGGREGATE_DIR="+t.TempDir(), "PRE_AGGREGATE_CACHE_DIR="+t.TempDir())
	case pathNATS:
		c.enableQueries()
		c.env = append(c.env, "PRE_AGGREGATE_STORAGE=nats")
	}
	c.env = append(c.env, "PRE_AGGREGATE_DUCKDB_QUERY_MEMORY_LIMIT=256MB", "PRE_AGGREGATE_DUCKDB_THREADS=1")
	c.env = append(c.env, extra...)
	c.startServer()
	if path == pathNATS {
		c.start("warehouse-worker", "worker", "--stream", "warehouse", "--concurrency", "4")
		for i := range preaggWorkers {
			c.startPreAggWorker(fmt.Sprintf("pa-%d", i+1))
		}
	}
	return c
}

// startPreAggWorker starts `millrace worker --stream pre-aggregate` with
// the worker id id and a cache directory of its own.
func (c *cluster) startPreAggWorker(id string) *proctest.Proc {
	c.t.Helper()
	return c.startEnv("preagg-worker-"+id, []string{"MILLRACE_WORKER_ID=" + id, "PRE_AGGREGATE_CACHE_DIR=" + c.t.TempDir()},
		"worker", "--stream", "pre-aggregate", "--concurrency", "4")
}

// preAggProject creates a project on conn and posts the model doc.
func (c *cluster) preAggProject(conn api.WarehouseConn, doc string) string {
	c.t.Helper()
	project := "pa_" + randHex(4)
	if _, err := c.api.ProjectPut(c.t.Context(), project, conn); err != nil {
		c.t.Fatalf("create project: %v", err)
	}
	if _, err := c.api.ModelsPut(c.t.Context(), project, []byte(doc)); err != nil {
		c.t.Fatalf("post models: %v", err)
	}
	return project
}

// waitActive waits until each named pre-aggregate of project has an
// active build of its current definition and returns them by name.
func (c *cluster) waitActive(project string, names []string, d time.Duration) map[string]api.PreAggBuild {
	c.t.Helper()
	out := map[string]api.PreAggBuild{}
	wait.For(c.t, d, func() error {
		list, err := c.api.PreAggregates(c.t.Context(), project)
		if err != nil {
			return err
		}
		var missing []string
		for _, n := range names {
			i := slices.IndexFunc(list, func(p api.PreAggInfo) bool { return p.Name == n })
			switch {
			case i < 0:
				missing = append(missing, n+" (not listed)")
			case list[i].Active == nil || list[i].ActiveOutdated:
				st := "no build"
				if l := list[i].Last; l != nil {
					st = fmt.Sprintf("last %s %s %s", l.BuildUUID, l.Status, l.Error)
				}
				missing = append(missing, n+" ("+st+")")
			default:
				out[n] = *list[i].Active
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no active build yet: %s", strings.Join(missing, "; "))
		}
		return nil
	})
	return out
}

// paResult is a metric query's outcome.
type paResult struct {
	uuid   string
	submit api.PreAggregateMeta // as the submit's reply said
	page   api.QueryPage        // the ready result, every row on one page
	meta   api.PreAggregateMeta // as the ready poll says (a fallback changes it)
}

// metricQuery submits q (bypass: usePreAggregates false) and waits until
// it is ready.
func (c *cluster) metricQuery(project string, q semantic.MetricQuery, bypass bool) paResult {
	c.t.Helper()
	res, err := c.tryMetricQuery(project, q, bypass, 90*time.Second)
	if err != nil {
		c.t.Fatalf("metric query %s (bypass %v): %v", jsonString(q), bypass, err)
	}
	return res
}

func (c *cluster) tryMetricQuery(project string, q semantic.MetricQuery, bypass bool, d time.Duration) (paResult, error) {
	in := api.MetricQuerySubmit{Query: q}
	if bypass {
		f := false
		in.UsePreAggregates = &f
	}
	ctx := c.t.Context()
	sub, err := c.api.MetricQuerySubmit(ctx, project, in)
	if err != nil {
		return paResult{}, fmt.Errorf("submit: %w", err)
	}
	res := paResult{uuid: sub.QueryUUID}
	if sub.CacheMetadata.PreAggregate == nil {
		return res, fmt.Errorf("the submit reply has no cacheMetadata.preAggregate: %s", jsonString(sub))
	}
	res.submit = *sub.CacheMetadata.PreAggregate
	err = wait.Poll(d, func() error {
		p, err := c.api.QueryGet(ctx, project, sub.QueryUUID, 1, 5000)
		if err != nil {
			return err
		}
		res.page = p
		switch p.Status {
		case api.QueryReady:
			return nil
		case api.QueryError:
			return nil
		}
		return fmt.Errorf("query %s is %s", sub.QueryUUID, p.Status)
	})
	if err != nil {
		return res, err
	}
	if res.page.Status != api.QueryReady {
		return res, fmt.Errorf("query %s ended %s: %s", sub.QueryUUID, res.page.Status, res.page.Error)
	}
	if res.page.CacheMetadata == nil || res.page.CacheMetadata.PreAggregate == nil {
		return res, fmt.Errorf("the ready poll of %s has no cacheMetadata.preAggregate", sub.QueryUUID)
	}
	res.meta = *res.page.CacheMetadata.PreAggregate
	if int64(len(res.page.Rows)) != res.page.TotalResults {
		return res, fmt.Errorf("query %s: %d rows on the page of %d", sub.QueryUUID, len(res.page.Rows), res.page.TotalResults)
	}
	return res, nil
}

// sameRows compares two results: the same columns in the same order and
// the same rows in the same order; numbers within 1e-9 relative.
func sameRows(a, b api.QueryPage) error {
	if len(a.Columns) != len(b.Columns) {
		return fmt.Errorf("columns %v vs %v", a.Columns, b.Columns)
	}
	for i := range a.Columns {
		if a.Columns[i] != b.Columns[i] {
			return fmt.Errorf("column %d: %+v vs %+v", i, a.Columns[i], b.Columns[i])
		}
	}
	if len(a.Rows) != len(b.Rows) {
		return fmt.Errorf("%d rows vs %d rows", len(a.Rows), len(b.Rows))
	}
	for i := range a.Rows {
		for _, col := range a.Columns {
			x, y := a.Rows[i][col.Name], b.Rows[i][col.Name]
			if !sameValue(x, y) {
				return fmt.Errorf("row %d column %s: %v (%T) vs %v (%T)\nrow: %v\nvs:  %v", i, col.Name, x, x, y, y, a.Rows[i], b.Rows[i])
			}
		}
		if len(a.Rows[i]) != len(b.Rows[i]) {
			return fmt.Errorf("row %d: %v vs %v", i, a.Rows[i], b.Rows[i])
		}
	}
	return nil
}

func sameValue(x, y any) bool {
	fx, okx := number(x)
	fy, oky := number(y)
	if okx || oky {
		if !okx || !oky {
			return false
		}
		if fx == fy {
			return true
		}
		return math.Abs(fx-fy) <= 1e-9*math.Max(math.Abs(fx), math.Abs(fy))
	}
	return fmt.Sprintf("%T %v", x, x) == fmt.Sprintf("%T %v", y, y)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	}
	return 0, false
}

// paGen generates random metric queries over model paModel, most of them
// shaped after one of its pre-aggregates so that many are hits, some
// deliberately not (an uncovered field, a grain that does not derive, a
// count_distinct at a coarser grain, a filter outside a scope).
type paGen struct {
	r     *rand.Rand
	model string
}

func (g *paGen) fid(name string) string { return g.model + "_" + name }

func (g *paGen) pick(list []string) string { return list[g.r.IntN(len(list))] }

func (g *paGen) subset(list []string, atLeast int) []string {
	var out []string
	for _, x := range list {
		if g.r.IntN(2) == 0 {
			out = append(out, x)
		}
	}
	for len(out) < atLeast {
		x := g.pick(list)
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// derivable lists the grains a pre-aggregate at g can serve.
func derivable(g semantic.Grain) []semantic.Grain {
	var out []semantic.Grain
	for _, q := range semantic.Grains {
		if g.Derives(q) {
			out = append(out, q)
		}
	}
	return out
}

func (g *paGen) query() semantic.MetricQuery {
	var dims, metrics []string
	var grain semantic.Grain
	var p *paPreAgg
	if g.r.Float64() < 0.8 {
		p = &paPreAggs[g.r.IntN(len(paPreAggs))]
		dims = g.subset(p.dims, 0)
		metrics = g.subset(p.metrics, 1)
		if p.grain != "" && g.r.Float64() < 0.75 {
			if g.r.Float64() < 0.8 {
				d := derivable(p.grain)
				grain = d[g.r.IntN(len(d))]
			} else {
				grain = semantic.Grains[g.r.IntN(len(semantic.Grains))]
			}
		} else if p.grain == "" && g.r.Float64() < 0.1 {
			grain = semantic.GrainYear
		}
		hasNonAdditive := slices.ContainsFunc(metrics, paNonAdditive)
		if hasNonAdditive && g.r.Float64() < 0.7 {
			dims, grain = slices.Clone(p.dims), p.grain // the exact match they need
		}
		if g.r.Float64() < 0.08 {
			dims = append(dims, "qty") // in no pre-aggregate
		}
	} else {
		dims = g.subset(paAllDims, 0)
		metrics = g.subset(paAllMetrics, 1)
		if g.r.Float64() < 0.6 {
			grain = semantic.Grains[g.r.IntN(len(semantic.Grains))]
		}
	}
	q := semantic.MetricQuery{ExploreName: g.model}
	for _, d := range dims {
		q.Dimensions = append(q.Dimensions, g.fid(d))
	}
	if grain != "" {
		q.Dimensions = append(q.Dimensions, g.fid("created_at_"+string(grain)))
	}
	for _, m := range metrics {
		q.Metrics = append(q.Metrics, g.fid(m))
	}
	q.Filters = g.filters(p, dims, metrics)
	fields := append(slices.Clone(q.Dimensions), q.Metrics...)
	if g.r.Float64() < 0.6 {
		s := g.subset(fields, 1)
		for _, f := range s[:min(len(s), 1+g.r.IntN(2))] {
			q.Sorts = append(q.Sorts, semantic.Sort{FieldID: f, Descending: g.r.IntN(2) == 0})
		}
	}
	q.Limit = []int{0, 3, 10, 50, 200, 5000}[g.r.IntN(6)]
	return q
}

func rule(field string, op semantic.FilterOperator, values ...any) semantic.FilterItem {
	return semantic.FilterItem{FilterRule: semantic.FilterRule{Target: semantic.FilterTarget{FieldID: field}, Operator: op, Values: values}}
}

// filters returns random dimension (WHERE) and metric (HAVING) filters,
// mostly on fields p stores.
func (g *paGen) filters(p *paPreAgg, dims, metrics []string) semantic.Filters {
	var where, having []semantic.FilterItem
	pool := paAllDims
	if p != nil {
		pool = p.dims
		if p.scope && g.r.Float64() < 0.85 {
			where = append(where, rule(g.fid("channel"), semantic.OpEquals, "web"))
		}
	}
	if g.r.Float64() < 0.45 && len(pool) > 0 {
		switch d := g.pick(pool); d {
		case "region":
			switch g.r.IntN(4) {
			case 0:
				where = append(where, rule(g.fid(d), semantic.OpEquals, g.pick(paRegions), g.pick(paRegions)))
			case 1:
				where = append(where, rule(g.fid(d), semantic.OpNotEquals, g.pick(paRegions)))
			case 2:
				where = append(where, rule(g.fid(d), semantic.OpIsNull))
			default:
				where = append(where, rule(g.fid(d), semantic.OpStartsWith, "Mid"))
			}
		case "channel":
			if g.r.IntN(2) == 0 {
				where = append(where, rule(g.fid(d), semantic.OpEquals, g.pick(paChannels)))
			} else {
				where = append(where, rule(g.fid(d), semantic.OpNotNull))
			}
		case "is_member":
			where = append(where, rule(g.fid(d), semantic.OpEquals, g.r.IntN(2) == 0))
		case "qty":
			where = append(where, rule(g.fid(d), semantic.OpGreaterThan, 10))
		}
	}
	if g.r.Float64() < 0.25 {
		// Raw time at a month boundary: servable from day and month
		// grains, not from weeks.
		month := time.Date(2023+g.r.IntN(2), time.Month(1+g.r.IntN(12)), 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
		if g.r.IntN(2) == 0 {
			where = append(where, rule(g.fid("created_at"), semantic.OpGreaterThanOrEqual, month))
		} else {
			where = append(where, rule(g.fid("created_at"), semantic.OpLessThan, month))
		}
	}
	if g.r.Float64() < 0.15 {
		m := g.pick(metrics)
		switch m {
		case "orders", "customers":
			having = append(having, rule(g.fid(m), semantic.OpGreaterThan, 2))
		default:
			having = append(having, rule(g.fid(m), semantic.OpGreaterThanOrEqual, 10))
		}
	}
	var f semantic.Filters
	if len(where) > 0 {
		f.Dimensions = &semantic.FilterGroup{ID: "w", And: where}
	}
	if len(having) > 0 {
		f.Metrics = &semantic.FilterGroup{ID: "h", And: having}
	}
	return f
}

// differential runs n random queries on project, each normally and with
// pre-aggregates bypassed, and checks that every answer equals the
// warehouse's; it returns the hits by pre-aggregate. active names the
// builds a hit may come from.
func (c *cluster) differential(project, model string, n int, seed uint64, active map[string]api.PreAggBuild) map[string]int {
	c.t.Helper()
	g := &paGen{r: rand.New(rand.NewPCG(seed, 7)), model: model}
	queries := make([]semantic.MetricQuery, n)
	for i := range queries {
		queries[i] = g.query()
	}
	var mu sync.Mutex
	hits := map[string]int{}
	var failures []string
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				msg := c.differentialOne(project, queries[i], active, &mu, hits)
				if msg != "" {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("query %d %s:\n  %s", i, jsonString(queries[i]), msg))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range queries {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if len(failures) > 0 {
		c.t.Fatalf("%d of %d queries failed:\n%s", len(failures), n, strings.Join(failures, "\n"))
	}
	return hits
}

func (c *cluster) differentialOne(project string, q semantic.MetricQuery, active map[string]api.PreAggBuild, mu *sync.Mutex, hits map[string]int) string {
	normal, err := c.tryMetricQuery(project, q, false, 90*time.Second)
	if err != nil {
		return "normal: " + err.Error()
	}
	bypass, err := c.tryMetricQuery(project, q, true, 90*time.Second)
	if err != nil {
		return "bypassed: " + err.Error()
	}
	if bypass.meta.Hit || bypass.meta.Reason == nil || bypass.meta.Reason.Code != api.PreAggMissBypassed {
		return fmt.Sprintf("usePreAggregates false gave %s, want a miss BYPASSED", jsonString(bypass.meta))
	}
	if normal.meta.Hit != normal.submit.Hit {
		return fmt.Sprintf("the submit said %s, the result says %s", jsonString(normal.submit), jsonString(normal.meta))
	}
	if normal.meta.Hit {
		b, ok := active[normal.meta.Name]
		switch {
		case !ok:
			return fmt.Sprintf("a hit names pre-aggregate %q, not one of %v", normal.meta.Name, slices.Sorted(maps.Keys(active)))
		case normal.meta.BuildUUID != b.BuildUUID:
			return fmt.Sprintf("a hit on %s names build %q, want its active build %s", normal.meta.Name, normal.meta.BuildUUID, b.BuildUUID)
		case normal.meta.BuiltAt == nil || normal.meta.DataAsOf == nil:
			return fmt.Sprintf("a hit does not say when its build was made and how fresh it is: %s", jsonString(normal.meta))
		}
	} else if normal.meta.Reason == nil || normal.meta.Reason.Code == "" {
		return fmt.Sprintf("a miss without a reason: %s", jsonString(normal.meta))
	}
	if err := sameRows(normal.page, bypass.page); err != nil {
		return fmt.Sprintf("answers differ (%s): %v", jsonString(normal.meta), err)
	}
	mu.Lock()
	if normal.meta.Hit {
		hits[normal.meta.Name]++
	} else {
		hits["miss:"+normal.meta.Reason.Code]++
	}
	mu.Unlock()
	return ""
}

// paNames are paModel's pre-aggregate names.
func paNames() []string {
	var out []string
	for _, p := range paPreAggs {
		out = append(out, p.name)
	}
	return out
}

// The generator's queries are valid for the model, and the matcher finds
// a healthy mix of hits and misses among them: without this the
// differential tests could pass by checking next to nothing.
func TestPreAggGeneratorMix(t *testing.T) {
	t.Parallel()
	doc := paModel("sales", "table: facts") + sideModel
	models, err := semantic.ParseModelsDoc("paModel", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 3 || len(models[0].PreAggregates) != len(paPreAggs) {
		t.Fatalf("parsed %d models (%d pre-aggregates), want 3 with %d", len(models), len(models[0].PreAggregates), len(paPreAggs))
	}
	m := &models[0]
	// Rows about as many as the seeded table gives each.
	rows := map[string]int64{"daily_region_channel": 1900, "monthly_member": 300, "monthly_distinct": 140, "web_weekly": 450, "by_channel": 12}
	active := map[string]preagg.ActiveBuild{}
	for i := range m.PreAggregates {
		p := &m.PreAggregates[i]
		active[p.Name] = preagg.ActiveBuild{BuildUUID: "b-" + p.Name, DefHash: semantic.PreAggHash(m, p), Rows: rows[p.Name]}
	}
	g := &paGen{r: rand.New(rand.NewPCG(1, 7)), model: "sales"}
	outcomes := map[string]int{}
	const n = 400
	for range n {
		q := g.query()
		r, err := semantic.Resolve(m, q)
		if err != nil {
			t.Fatalf("generated query %s does not resolve: %v", jsonString(q), err)
		}
		for _, d := range []semantic.Dialect{semantic.Postgres, semantic.DuckDB} {
			if _, err := semantic.Compile(r, d); err != nil {
				t.Fatalf("generated query %s does not compile for %s: %v", jsonString(q), d, err)
			}
		}
		dec := preagg.Match(r, active, true, time.Now())
		if dec.Hit {
			outcomes[dec.PreAgg.Name]++
		} else {
			outcomes["miss:"+dec.Reason.Code]++
		}
	}
	t.Logf("outcomes of %d generated queries: %v", n, outcomes)
	hits := 0
	for _, p := range paPreAggs {
		if outcomes[p.name] == 0 {
			t.Errorf("no generated query is served by %s", p.name)
		}
		hits += outcomes[p.name]
	}
	if hits < n*4/10 || hits > n*9/10 {
		t.Errorf("%d of %d generated queries hit, want between 40%% and 90%%", hits, n)
	}
	for _, code := range []string{api.PreAggMissFieldNotCovered, api.PreAggMissGrain, api.PreAggMissNonAdditive} {
		if outcomes["miss:"+code] == 0 {
			t.Errorf("no generated query misses with %s", code)
		}
	}
}

// sameRows is what the differential tests rest on: it must tell apart
// what differs, and only within the float tolerance forgive.
func TestPreAggSameRows(t *testing.T) {
	t.Parallel()
	page := func(v any) api.QueryPage {
		return api.QueryPage{Columns: []api.Column{{Name: "a", Type: "number"}}, Rows: []map[string]any{{"a": v}}}
	}
	for _, c := range []struct {
		x, y any
		same bool
	}{
		{json.Number("1"), json.Number("1.0"), true},
		{json.Number("100"), json.Number("100.00000000001"), true},
		{json.Number("100"), json.Number("100.000001"), false},
		{json.Number("0"), nil, false},
		{json.Number("1"), "1", false},
		{"2024-01-01", "2024-01-01", true},
		{"2024-01-01", "2024-01-02", false},
		{true, false, false},
		{nil, nil, true},
	} {
		if err := sameRows(page(c.x), page(c.y)); (err == nil) != c.same {
			t.Errorf("sameRows(%#v, %#v) = %v, want same=%v", c.x, c.y, err, c.same)
		}
	}
	two := page(json.Number("1"))
	two.Rows = append(two.Rows, map[string]any{"a": json.Number("2")})
	if sameRows(two, page(json.Number("1"))) == nil {
		t.Error("sameRows ignores a missing row")
	}
	other := page(json.Number("1"))
	other.Columns[0].Name = "b"
	if sameRows(other, page(json.Number("1"))) == nil {
		t.Error("sameRows ignores a column's name")
	}
}
