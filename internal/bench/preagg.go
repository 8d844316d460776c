package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/worker/preaggs"
	"github.com/millrace/millrace/internal/worker/queries"
)

// `millrace bench preagg`: how much faster a dashboard is when its charts
// are served from pre-aggregates, and whether every answer is still right.
//
// It generates a fact table in a PostgreSQL warehouse (deterministic, so
// runs compare), declares a model with pre-aggregates over it, builds them,
// then answers a fixed set of dashboard-style metric queries both ways
// through the API: from the pre-aggregate, and from the warehouse with the
// pre-aggregate bypassed (usePreAggregates: false). Every pair of answers
// is compared; any difference fails the run.

// Defaults of PreaggOptions.
const (
	DefaultPreaggRows    = 1_000_000
	DefaultPreaggTable   = "millrace_bench_orders_v2"
	DefaultPreaggReps    = 5
	DefaultPreaggProject = "bench_preagg"
	preaggChunk          = 1_000_000 // rows per INSERT while generating
	preaggPoll           = 500 * time.Microsecond
)

// PreaggOptions configures a pre-aggregate benchmark.
type PreaggOptions struct {
	Warehouse string // postgres:// URL of the warehouse (required)
	Rows      int64
	Table     string
	Reps      int // timed repetitions of each query on each path (the median is reported)
	Project   string
	Server    string // a running server; else self-contained on Store
	Token     string // API token for Server (MILLRACE_TOKEN)
	Store     string
	// NATSEnabled runs the self-contained stack with pre-aggregate and
	// warehouse workers over NATS instead of in the server's process.
	NATSEnabled bool
	Timeout     time.Duration
	Progress    io.Writer
	Log         *slog.Logger
}

// PreaggQuery is one dashboard query's outcome.
type PreaggQuery struct {
	Name            string  `json:"name"`
	Hit             bool    `json:"hit"`
	PreAggregate    string  `json:"preAggregate,omitempty"`
	MissReason      string  `json:"missReason,omitempty"`
	Rows            int64   `json:"rows"`
	Equal           bool    `json:"equal"`
	Difference      string  `json:"difference,omitempty"`
	HitExecMs       float64 `json:"hitExecMs"`       // median initialQueryExecutionMs served from the pre-aggregate
	WarehouseExecMs float64 `json:"warehouseExecMs"` // median initialQueryExecutionMs on the warehouse
	HitE2EMs        float64 `json:"hitE2eMs"`        // median submit -> ready through the API
	WarehouseE2EMs  float64 `json:"warehouseE2eMs"`
	SpeedupE2E      float64 `json:"speedupE2e"` // WarehouseE2EMs / HitE2EMs
}

// PreaggResult is the report of a pre-aggregate benchmark.
type PreaggResult struct {
	Rows              int64             `json:"rows"`
	Table             string            `json:"table"`
	Path              string            `json:"path"` // in-process | nats
	GenerateSec       float64           `json:"generateSeconds,omitempty"`
	Builds            []api.PreAggBuild `json:"builds"`
	Queries           []PreaggQuery     `json:"queries"`
	Differ            int               `json:"differ"`
	Misses            int               `json:"misses"`
	HitE2EP50Ms       float64           `json:"hitE2eP50Ms"`
	HitE2EP95Ms       float64           `json:"hitE2eP95Ms"`
	WarehouseE2EP50Ms float64           `json:"warehouseE2eP50Ms"`
	SpeedupMedian     float64           `json:"speedupMedian"` // median over queries of SpeedupE2E
	SpeedupMin        float64           `json:"speedupMin"`
	PeakRSSBytes      int64             `json:"peakRssBytes,omitempty"` // self-contained: this process (server and workers)
}

// preaggModel is the benchmark's model: an orders fact table with a daily
// roll-up (additive metrics), a small monthly one, and an exact monthly
// one for distinct customers.
func preaggModel(table string) string {
	return `models:
  - name: orders
    table: ` + table + `
    dimensions:
      - {name: status, type: string}
      - {name: region, type: string}
      - {name: channel, type: string}
      - {name: is_returning, type: boolean}
      - {name: created_at, type: timestamp}
    metrics:
      - {name: orders, type: count}
      - {name: revenue, type: sum, sql: amount}
      - {name: avg_order_value, type: average, sql: amount}
      - {name: min_amount, type: min, sql: amount}
      - {name: max_amount, type: max, sql: amount}
      - {name: units, type: sum, sql: quantity}
      - {name: customers, type: count_distinct, sql: customer_id}
    pre_aggregates:
      - name: daily
        dimensions: [status, region, channel]
        metrics: [orders, revenue, avg_order_value, min_amount, max_amount, units]
        time_dimension: created_at
        granularity: day
      - name: monthly
        dimensions: [region, channel]
        metrics: [orders, revenue, avg_order_value, units]
        time_dimension: created_at
        granularity: month
      - name: monthly_customers
        dimensions: [region]
        metrics: [customers]
        time_dimension: created_at
        granularity: month
`
}

// preaggQueries are the dashboard's charts.
func preaggQueries() []struct {
	Name  string
	Query semantic.MetricQuery
} {
	eq := func(field string, v ...any) *semantic.FilterGroup {
		return &semantic.FilterGroup{And: []semantic.FilterItem{{FilterRule: semantic.FilterRule{
			Target: semantic.FilterTarget{FieldID: field}, Operator: semantic.OpEquals, Values: v}}}}
	}
	between := func(field string, from, to string) *semantic.FilterGroup {
		return &semantic.FilterGroup{And: []semantic.FilterItem{{FilterRule: semantic.FilterRule{
			Target: semantic.FilterTarget{FieldID: field}, Operator: semantic.OpInBetween, Values: []any{from, to}}}}}
	}
	q := func(dims, mets []string, f semantic.Filters, sorts []semantic.Sort, limit int) semantic.MetricQuery {
		return semantic.MetricQuery{ExploreName: "orders", Dimensions: dims, Metrics: mets, Filters: f, Sorts: sorts, Limit: limit}
	}
	return []struct {
		Name  string
		Query semantic.MetricQuery
	}{
		{"revenue by day, Q1 2025", q([]string{"orders_created_at_day"}, []string{"orders_revenue", "orders_orders"},
			semantic.Filters{Dimensions: between("orders_created_at_day", "2025-01-01", "2025-03-31")}, nil, 500)},
		{"revenue by month and region", q([]string{"orders_created_at_month", "orders_region"}, []string{"orders_revenue"}, semantic.Filters{}, nil, 500)},
		{"average order value by channel and quarter", q([]string{"orders_created_at_quarter", "orders_channel"}, []string{"orders_avg_order_value"}, semantic.Filters{}, nil, 500)},
		{"orders by status", q([]string{"orders_status"}, []string{"orders_orders"}, semantic.Filters{}, nil, 500)},
		{"completed revenue by region", q([]string{"orders_region"}, []string{"orders_revenue", "orders_units"},
			semantic.Filters{Dimensions: eq("orders_status", "completed")}, nil, 500)},
		{"smallest and largest order by year", q([]string{"orders_created_at_year"}, []string{"orders_min_amount", "orders_max_amount"}, semantic.Filters{}, nil, 500)},
		{"weekly orders in one region", q([]string{"orders_created_at_week"}, []string{"orders_orders"},
			semantic.Filters{Dimensions: eq("orders_region", "emea-north")}, nil, 500)},
		{"distinct customers by month and region", q([]string{"orders_created_at_month", "orders_region"}, []string{"orders_customers"}, semantic.Filters{}, nil, 500)},
		{"top 10 region x channel by revenue", q([]string{"orders_region", "orders_channel"}, []string{"orders_revenue"}, semantic.Filters{},
			[]semantic.Sort{{FieldID: "orders_revenue", Descending: true}}, 10)},
		{"daily revenue by status, last 90 days of 2025", q([]string{"orders_created_at_day", "orders_status"}, []string{"orders_revenue"},
			semantic.Filters{Dimensions: between("orders_created_at_day", "2025-10-03", "2025-12-31")}, nil, 5000)},
	}
}

// preaggRegions are the region values the generator uses (8).
var preaggRegions = []string{"amer-east", "amer-west", "latam", "emea-north", "emea-south", "apac-north", "apac-south", "anz"}

// generateFacts makes sure table holds exactly rows generated rows,
// creating it in chunks (with progress) when it does not. Values are
// deterministic functions of the row number, so two runs compare.
func generateFacts(ctx context.Context, warehouse, table string, rows int64, progress io.Writer) (bool, error) {
	conn, err := pgx.Connect(ctx, warehouse)
	if err != nil {
		return false, fmt.Errorf("--warehouse: %w", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{table}.Sanitize()
	var have int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+ident).Scan(&have); err == nil && have == rows {
		return false, nil // already generated
	}
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+ident); err != nil {
		return false, err
	}
	_, err = conn.Exec(ctx, `CREATE TABLE `+ident+` (
		order_id bigint NOT NULL, customer_id bigint NOT NULL, status text NOT NULL, region text NOT NULL,
		channel text NOT NULL, is_returning boolean NOT NULL, amount numeric(12,2), quantity integer NOT NULL,
		created_at timestamp NOT NULL)`)
	if err != nil {
		return false, err
	}
	regions := "ARRAY['" + strings.Join(preaggRegions, "','") + "']"
	for from := int64(1); from <= rows; from += preaggChunk {
		to := min(from+preaggChunk-1, rows)
		// h is a multiplicative hash of the row number; each column takes
		// other bits of it, so the columns vary independently. Amounts
		// are exact decimals (sums re-aggregated in another order stay
		// equal), and a twentieth of them are NULL (refunds without a
		// value).
		_, err := conn.Exec(ctx, `INSERT INTO `+ident+`
			SELECT g, (h / 7) % 250000,
			  (ARRAY['completed','shipped','pending','cancelled','returned'])[1 + h % 5],
			  (`+regions+`)[1 + (h / 5) % 8],
			  (ARRAY['web','mobile','store','partner'])[1 + (h / 40) % 4],
			  (h / 160) % 3 = 0,
			  CASE WHEN (h / 480) % 20 = 0 THEN NULL ELSE ((g * 48271) % 99991) / 100.0 END,
			  1 + (h / 9600) % 9,
			  timestamp '2024-01-01' + ((g * 69069) % (731 * 86400)) * interval '1 second'
			FROM (SELECT g, (g * 2654435761) % 4294967296 AS h FROM generate_series($1::bigint, $2::bigint) AS g) AS s`, from, to)
		if err != nil {
			return false, fmt.Errorf("generate rows %d-%d: %w", from, to, err)
		}
		if progress != nil {
			fmt.Fprintf(progress, "generated %d/%d rows\n", to, rows)
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE "+ident); err != nil {
		return false, err
	}
	return true, nil
}

// sameRows compares two result pages: same columns, same rows in the same
// order, numbers equal within a relative 1e-9.
func sameRows(a, b api.QueryPage) (bool, string) {
	if len(a.Columns) != len(b.Columns) {
		return false, fmt.Sprintf("%d columns vs %d", len(a.Columns), len(b.Columns))
	}
	for i := range a.Columns {
		if a.Columns[i].Name != b.Columns[i].Name {
			return false, fmt.Sprintf("column %d is %s vs %s", i, a.Columns[i].Name, b.Columns[i].Name)
		}
	}
	if len(a.Rows) != len(b.Rows) {
		return false, fmt.Sprintf("%d rows vs %d", len(a.Rows), len(b.Rows))
	}
	for i := range a.Rows {
		for _, c := range a.Columns {
			if !sameValue(a.Rows[i][c.Name], b.Rows[i][c.Name]) {
				return false, fmt.Sprintf("row %d column %s: %v vs %v", i+1, c.Name, a.Rows[i][c.Name], b.Rows[i][c.Name])
			}
		}
	}
	return true, ""
}

func sameValue(x, y any) bool {
	fx, okx := number(x)
	fy, oky := number(y)
	if okx && oky {
		if fx == fy {
			return true
		}
		return math.Abs(fx-fy) <= 1e-9*math.Max(math.Abs(fx), math.Abs(fy))
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	}
	return 0, false
}

// waitReady polls a query until it is ready and returns its first page
// (all rows: the benchmark's queries stay under one page) and when the
// client saw it ready.
func waitReady(ctx context.Context, c *client.Client, project, uuid string) (api.QueryPage, time.Time, error) {
	for {
		p, err := c.QueryGet(ctx, project, uuid, 1, 5000)
		if err != nil {
			return p, time.Time{}, err
		}
		switch p.Status {
		case api.QueryReady:
			return p, time.Now(), nil
		case api.QueryError, api.QueryCancelled, api.QueryExpired:
			return p, time.Time{}, fmt.Errorf("query %s ended %s: %s", uuid, p.Status, p.Error)
		}
		select {
		case <-ctx.Done():
			return p, time.Time{}, ctx.Err()
		case <-time.After(preaggPoll):
		}
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// peakRSS reads this process's peak resident set size (Linux).
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

var errPreaggDiffer = errors.New("pre-aggregate answers differ from the warehouse's")

// RunPreagg runs the pre-aggregate benchmark.
func RunPreagg(ctx context.Context, opts PreaggOptions) (*PreaggResult, error) {
	if opts.Warehouse == "" {
		return nil, errors.New("--warehouse is required: a postgres:// URL the benchmark may create a table in, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	if opts.Rows <= 0 {
		opts.Rows = DefaultPreaggRows
	}
	if opts.Table == "" {
		opts.Table = DefaultPreaggTable
	}
	if opts.Reps <= 0 {
		opts.Reps = DefaultPreaggReps
	}
	if opts.Project == "" {
		opts.Project = DefaultPreaggProject
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Minute
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	res := &PreaggResult{Rows: opts.Rows, Table: opts.Table, Path: "in-process"}
	if opts.NATSEnabled {
		res.Path = "nats"
	}

	start := time.Now()
	made, err := generateFacts(ctx, opts.Warehouse, opts.Table, opts.Rows, opts.Progress)
	if err != nil {
		return nil, err
	}
	if made {
		res.GenerateSec = time.Since(start).Seconds()
	}

	base, token := opts.Server, opts.Token
	if base == "" {
		if opts.Store == "" {
			return nil, errors.New("give --server URL (a running server) or --store (self-contained)")
		}
		st, err := startPreaggStack(ctx, &opts)
		if err != nil {
			return nil, err
		}
		defer st.stop()
		base, token = st.url, st.token
	}
	c := client.New(base).WithToken(token)
	if _, err := c.ProjectPut(ctx, opts.Project, api.WarehouseConn{Type: "postgres", URL: opts.Warehouse}); err != nil {
		return nil, fmt.Errorf("create project %s: %w", opts.Project, err)
	}
	if _, err := c.ModelsPut(ctx, opts.Project, []byte(preaggModel(opts.Table))); err != nil {
		return nil, fmt.Errorf("declare the model: %w", err)
	}
	if res.Builds, err = buildAll(ctx, c, opts); err != nil {
		return nil, err
	}

	var hitE2E, whE2E, speedups []float64
	for _, bq := range preaggQueries() {
		fmt.Fprintf(opts.Progress, "query %q\n", bq.Name)
		out := PreaggQuery{Name: bq.Name}
		var hitPage, whPage api.QueryPage
		var hE2E, wE2E, hExec, wExec []float64
		for rep := range opts.Reps + 1 { // the first of each is a warm-up
			no := false
			p, e2e, meta, err := timedMetricQuery(ctx, c, opts.Project, api.MetricQuerySubmit{Query: bq.Query, InvalidateCache: true})
			if err != nil {
				return nil, fmt.Errorf("%s (pre-aggregate): %w", bq.Name, err)
			}
			if meta != nil {
				out.Hit, out.PreAggregate = meta.Hit, meta.Name
				if meta.Reason != nil {
					out.MissReason = meta.Reason.Code
				}
			}
			w, we2e, _, err := timedMetricQuery(ctx, c, opts.Project, api.MetricQuerySubmit{Query: bq.Query, InvalidateCache: true, UsePreAggregates: &no})
			if err != nil {
				return nil, fmt.Errorf("%s (warehouse): %w", bq.Name, err)
			}
			if rep == 0 {
				hitPage, whPage = p, w
				continue
			}
			hE2E, wE2E = append(hE2E, e2e), append(wE2E, we2e)
			hExec, wExec = append(hExec, float64(p.ExecutionTimeMs)), append(wExec, float64(w.ExecutionTimeMs))
		}
		out.Rows = whPage.TotalResults
		out.Equal, out.Difference = sameRows(hitPage, whPage)
		out.HitE2EMs, out.WarehouseE2EMs = median(hE2E), median(wE2E)
		out.HitExecMs, out.WarehouseExecMs = median(hExec), median(wExec)
		if out.HitE2EMs > 0 {
			out.SpeedupE2E = out.WarehouseE2EMs / out.HitE2EMs
		}
		if !out.Equal {
			res.Differ++
		}
		if !out.Hit {
			res.Misses++
		} else {
			hitE2E = append(hitE2E, hE2E...)
			speedups = append(speedups, out.SpeedupE2E)
		}
		whE2E = append(whE2E, wE2E...)
		res.Queries = append(res.Queries, out)
	}
	res.HitE2EP50Ms, res.HitE2EP95Ms = percentile(hitE2E, 50), percentile(hitE2E, 95)
	res.WarehouseE2EP50Ms = percentile(whE2E, 50)
	res.SpeedupMedian = median(speedups)
	if len(speedups) > 0 {
		res.SpeedupMin = slices.Min(speedups)
	}
	if opts.Server == "" {
		res.PeakRSSBytes = peakRSS()
	}
	if res.Differ > 0 {
		return res, fmt.Errorf("%w: %d of %d queries", errPreaggDiffer, res.Differ, len(res.Queries))
	}
	return res, nil
}

// timedMetricQuery submits a metric query and waits until it is ready,
// returning its rows, the submit -> ready time in milliseconds and its
// pre-aggregate metadata.
func timedMetricQuery(ctx context.Context, c *client.Client, project string, in api.MetricQuerySubmit) (api.QueryPage, float64, *api.PreAggregateMeta, error) {
	t0 := time.Now()
	sub, err := c.MetricQuerySubmit(ctx, project, in)
	if err != nil {
		return api.QueryPage{}, 0, nil, err
	}
	p, at, err := waitReady(ctx, c, project, sub.QueryUUID)
	if err != nil {
		return p, 0, nil, err
	}
	return p, float64(at.Sub(t0).Microseconds()) / 1000, sub.CacheMetadata.PreAggregate, nil
}

// buildAll refreshes every pre-aggregate of the model and waits until each
// has an active build from this run.
func buildAll(ctx context.Context, c *client.Client, opts PreaggOptions) ([]api.PreAggBuild, error) {
	infos, err := c.PreAggregates(ctx, opts.Project)
	if err != nil {
		return nil, err
	}
	var uuids []string
	for _, pa := range infos {
		r, err := c.PreAggRefresh(ctx, opts.Project, pa.Model, pa.Name)
		if err != nil {
			return nil, fmt.Errorf("refresh %s/%s: %w", pa.Model, pa.Name, err)
		}
		uuids = append(uuids, r.BuildUUID)
	}
	var out []api.PreAggBuild
	for _, u := range uuids {
		for {
			b, err := c.PreAggBuild(ctx, opts.Project, u)
			if err != nil {
				return nil, err
			}
			if b.Status == api.BuildActive {
				fmt.Fprintf(opts.Progress, "built %s/%s: %d rows, %d bytes in %d ms\n", b.Model, b.PreAggregate, b.Rows, b.Bytes, b.DurationMs)
				out = append(out, b)
				break
			}
			if b.Status == api.BuildFailed || b.Status == api.BuildSuperseded {
				return nil, fmt.Errorf("build %s of %s/%s ended %s: %s", u, b.Model, b.PreAggregate, b.Status, b.Error)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return out, nil
}

// startPreaggStack is a self-contained Millrace for the benchmark: with
// NATSEnabled a warehouse worker and a pre-aggregate worker run beside the
// server, else the server runs queries and builds itself. Materializations
// go to a temporary directory (dir storage) in-process, to the embedded
// NATS's object store otherwise.
func startPreaggStack(ctx context.Context, opts *PreaggOptions) (*stack, error) {
	dir, err := os.MkdirTemp("", "millrace-bench-preagg-*")
	if err != nil {
		return nil, err
	}
	var nats config.NATS
	config.BindNATS(&config.Set{}, &nats) // defaults
	st, wcfg, err := startServerStack(ctx, opts.Store, false, 1, &nats, opts.Log, func(s *config.Server) {
		s.Query.NATSEnabled = opts.NATSEnabled
		s.PreAgg.Dir = dir
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	st.cleanup = append([]func(){func() { _ = os.RemoveAll(dir) }}, st.cleanup...)
	if !opts.NATSEnabled {
		return st, nil
	}
	wcfg.PreAgg.CacheDir = filepath.Join(dir, "cache")
	for _, start := range []func(context.Context) (runner, error){
		func(ctx context.Context) (runner, error) {
			c := wcfg
			c.WorkerID = "bench-warehouse"
			return queries.New(ctx, queries.FromConfig(c), opts.Log)
		},
		func(ctx context.Context) (runner, error) {
			c := wcfg
			c.WorkerID = "bench-pre-aggregate"
			return preaggs.New(ctx, preaggs.FromConfig(c), opts.Log)
		},
	} {
		if err := st.goWorker(ctx, start); err != nil {
			st.stop()
			return nil, err
		}
	}
	return st, nil
}

// WriteTable prints the result for people.
func (r *PreaggResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "fact table %s: %d rows; path: %s\n", r.Table, r.Rows, r.Path)
	for _, b := range r.Builds {
		fmt.Fprintf(tw, "build %s/%s: %d rows, %d bytes, %d ms\n", b.Model, b.PreAggregate, b.Rows, b.Bytes, b.DurationMs)
	}
	fmt.Fprintln(tw, "\nquery\tserved by\tequal\thit exec ms\twarehouse exec ms\thit e2e ms\twarehouse e2e ms\tspeed-up")
	for _, q := range r.Queries {
		by := "warehouse (" + q.MissReason + ")"
		if q.Hit {
			by = q.PreAggregate
		}
		eq := "yes"
		if !q.Equal {
			eq = "NO: " + q.Difference
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.0fx\n", q.Name, by, eq, q.HitExecMs, q.WarehouseExecMs, q.HitE2EMs, q.WarehouseE2EMs, q.SpeedupE2E)
	}
	fmt.Fprintf(tw, "\nanswers that differ: %d; misses: %d\n", r.Differ, r.Misses)
	fmt.Fprintf(tw, "hit submit -> ready: p50 %.1f ms, p95 %.1f ms; warehouse p50 %.1f ms\n", r.HitE2EP50Ms, r.HitE2EP95Ms, r.WarehouseE2EP50Ms)
	fmt.Fprintf(tw, "speed-up of a hit (submit -> ready): median %.0fx, min %.0fx\n", r.SpeedupMedian, r.SpeedupMin)
	if r.PeakRSSBytes > 0 {
		fmt.Fprintf(tw, "peak resident memory (server and workers): %d MiB\n", r.PeakRSSBytes>>20)
	}
	return tw.Flush()
}
