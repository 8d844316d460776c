//go:build cgo

package preagg_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/warehouse"
)

// The differential test is the proof of matching: random metric queries
// over a seeded fact table are answered by the warehouse (semantic.Compile)
// and, wherever a pre-aggregate can answer, from its materialization
// (preagg.Plan run on the same warehouse, its rows loaded into DuckDB as
// the view preagg, preagg.Rewrite run there). Every answer must be the
// warehouse's: same columns and types, same rows in the same order,
// numbers within 1e-9 relative. It runs on DuckDB and PostgreSQL.

const (
	diffSeed    = 20260511
	diffRows    = 6000
	diffQueries = 360
)

// diffNow is the test's clock: the data spans 2023 and 2024.
var diffNow = time.Date(2024, 12, 20, 9, 0, 0, 0, time.UTC)

func diffModel() *semantic.Model {
	dims := []semantic.Dimension{
		{Name: "status", Type: semantic.DimString},
		{Name: "country", Type: semantic.DimString},
		{Name: "channel", Type: semantic.DimString},
		{Name: "is_gift", Type: semantic.DimBoolean},
		{Name: "priority", Type: semantic.DimNumber},
		{Name: "created_at", Type: semantic.DimTimestamp},
		{Name: "ship_date", Type: semantic.DimDate},
	}
	mets := []semantic.Metric{
		{Name: "order_count", Type: semantic.MetricCount},
		{Name: "amount_count", Type: semantic.MetricCount, SQL: "amount"},
		{Name: "amount_sum", Type: semantic.MetricSum, SQL: "amount"},
		{Name: "amount_min", Type: semantic.MetricMin, SQL: "amount"},
		{Name: "amount_max", Type: semantic.MetricMax, SQL: "amount"},
		{Name: "amount_avg", Type: semantic.MetricAverage, SQL: "amount"},
		{Name: "discount", Type: semantic.MetricSum}, // the column named like the metric
		{Name: "discount_avg", Type: semantic.MetricAverage, SQL: "${TABLE}.discount"},
		{Name: "quantity_sum", Type: semantic.MetricSum, SQL: "quantity"},
		{Name: "quantity_min", Type: semantic.MetricMin, SQL: "quantity"},
		{Name: "customers", Type: semantic.MetricCountDistinct, SQL: "customer_id"},
		{Name: "amount_median", Type: semantic.MetricMedian, SQL: "amount"},
		{Name: "amount_p90", Type: semantic.MetricPercentile, SQL: "amount", Percentile: 90},
	}
	return &semantic.Model{
		Name: "orders", Table: "fact", Dimensions: dims, Metrics: mets,
		PreAggregates: []semantic.PreAggregate{
			{Name: "by_day", Dimensions: []string{"status", "country", "channel", "is_gift"},
				Metrics:       []string{"order_count", "amount_count", "amount_sum", "amount_min", "amount_max", "amount_avg", "discount", "discount_avg", "quantity_sum", "quantity_min"},
				TimeDimension: "created_at", Granularity: semantic.GrainDay},
			{Name: "by_week", Dimensions: []string{"status", "country"},
				Metrics:       []string{"order_count", "amount_sum", "amount_avg", "amount_min"},
				TimeDimension: "created_at", Granularity: semantic.GrainWeek},
			{Name: "by_month", Dimensions: []string{"status", "country", "channel", "priority"},
				Metrics:       []string{"order_count", "amount_sum", "amount_avg", "amount_max", "discount", "quantity_sum"},
				TimeDimension: "created_at", Granularity: semantic.GrainMonth,
				Refresh: semantic.Refresh{PartitionBy: semantic.GrainMonth, UpdateWindow: semantic.Duration(60 * 24 * time.Hour)}},
			{Name: "shipped_scope", Dimensions: []string{"country", "channel", "priority"},
				Metrics:       []string{"order_count", "amount_sum", "amount_avg"},
				TimeDimension: "created_at", Granularity: semantic.GrainDay,
				Filters: []semantic.FilterRule{
					{Target: semantic.FilterTarget{FieldID: "orders_status"}, Operator: semantic.OpEquals, Values: []any{"complete", "shipped"}},
					{Target: semantic.FilterTarget{FieldID: "orders_priority"}, Operator: semantic.OpGreaterThan, Values: []any{1}},
				}},
			{Name: "exact_month", Dimensions: []string{"country"},
				Metrics:       []string{"customers", "amount_median", "amount_p90", "order_count", "amount_sum"},
				TimeDimension: "created_at", Granularity: semantic.GrainMonth},
			{Name: "ship_day", Dimensions: []string{"status"},
				Metrics:       []string{"order_count", "amount_sum", "amount_max"},
				TimeDimension: "ship_date", Granularity: semantic.GrainDay},
			{Name: "gift_priority", Dimensions: []string{"is_gift", "priority"},
				Metrics: []string{"order_count", "customers", "amount_sum", "amount_avg"}},
			// A timestamp stored by the hour, and a date dimension stored raw.
			{Name: "by_hour", Dimensions: []string{"channel", "ship_date"},
				Metrics:       []string{"order_count", "amount_sum", "amount_max", "discount_avg"},
				TimeDimension: "created_at", Granularity: semantic.GrainHour},
			{Name: "by_quarter", Dimensions: []string{"status"},
				Metrics:       []string{"order_count", "amount_min", "amount_max", "quantity_sum"},
				TimeDimension: "created_at", Granularity: semantic.GrainQuarter},
		},
	}
}

// domains of the string dimensions: a quote, a LIKE wildcard, non-ASCII,
// mixed case (string order is code point order on both paths).
var (
	statuses  = []string{"complete", "shipped", "returned", "cancelled", "it's"}
	countries = []string{"FR", "DE", "US", "gb", "Éire"}
	channels  = []string{"web", "store", "app", "web_shop"}
	dataStart = time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	dataSpan  = 2 * 365 * 24 * time.Hour
)

type factRow struct {
	id                       int
	status, country, channel any // string or nil
	gift                     any // bool or nil
	priority                 any // int or nil
	created                  any // time.Time or nil
	ship                     any // time.Time (a date) or nil
	customer                 any // int or nil
	amount                   any // string (numeric(12,2)) or nil
	discount                 any // float64 or nil
	quantity                 any // int or nil
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func maybe(r *rand.Rand, nullPct int, v any) any {
	if r.IntN(100) < nullPct {
		return nil
	}
	return v
}

func genRow(r *rand.Rand, id int, start time.Time, span time.Duration) factRow {
	created := start.Add(time.Duration(r.Int64N(int64(span/time.Second))) * time.Second)
	row := factRow{
		id:       id,
		status:   maybe(r, 4, pick(r, statuses)),
		country:  maybe(r, 5, pick(r, countries)),
		channel:  maybe(r, 3, pick(r, channels)),
		gift:     maybe(r, 10, r.IntN(4) == 0),
		priority: maybe(r, 8, 1+r.IntN(5)),
		created:  maybe(r, 2, created),
		customer: maybe(r, 5, 1+r.IntN(900)),
		amount:   maybe(r, 6, fmt.Sprintf("%.2f", float64(r.IntN(55000)-5000)/100)),
		discount: maybe(r, 15, float64(r.IntN(2000)-300)/100),
		quantity: maybe(r, 5, r.IntN(12)-1),
	}
	if c, ok := row.created.(time.Time); ok && r.IntN(10) > 0 {
		y, m, d := c.AddDate(0, 0, r.IntN(9)).Date()
		row.ship = time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	}
	return row
}

func lit(d semantic.Dialect, v any) string {
	switch x := v.(type) {
	case time.Time:
		return "TIMESTAMP '" + x.Format("2006-01-02 15:04:05") + "'"
	case string:
		return semantic.Literal(d, x)
	}
	return semantic.Literal(d, v)
}

func insertSQL(d semantic.Dialect, rows []factRow) string {
	var b strings.Builder
	b.WriteString("INSERT INTO fact VALUES ")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		amount := "NULL"
		if r.amount != nil {
			amount = "CAST('" + r.amount.(string) + "' AS NUMERIC(12,2))"
		}
		ship := "NULL"
		if r.ship != nil {
			ship = "DATE '" + r.ship.(time.Time).Format(time.DateOnly) + "'"
		}
		fmt.Fprintf(&b, "(%d, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", r.id, lit(d, r.status), lit(d, r.country), lit(d, r.channel),
			lit(d, r.gift), lit(d, r.priority), lit(d, r.created), ship, lit(d, r.customer), amount, lit(d, r.discount), lit(d, r.quantity))
	}
	return b.String()
}

// result is a query's answer as the warehouse drivers give it.
type result struct {
	cols []warehouse.Column
	rows [][]any
}

func run(ctx context.Context, drv warehouse.Driver, sql string) (result, error) {
	var res result
	err := drv.Query(ctx, sql, func(c []warehouse.Column) error {
		res.cols = slices.Clone(c)
		return nil
	}, func(r []any) error {
		res.rows = append(res.rows, slices.Clone(r))
		return nil
	})
	return res, err
}

func mustRun(t *testing.T, drv warehouse.Driver, sql string) result {
	t.Helper()
	res, err := run(t.Context(), drv, sql)
	if err != nil {
		t.Fatalf("%v\nSQL:\n%s", err, sql)
	}
	return res
}

type diffWarehouse struct {
	name    string
	dialect semantic.Dialect
	drv     warehouse.Driver
}

func TestDifferential(t *testing.T) {
	t.Parallel()
	queries := genQueries(diffModel(), diffQueries)
	t.Run("duckdb", func(t *testing.T) {
		t.Parallel()
		drv, err := warehouse.Open(t.Context(), warehouse.Conn{Type: warehouse.TypeDuckDB, URL: filepath.Join(t.TempDir(), "warehouse.duckdb")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { drv.Close() })
		differential(t, diffWarehouse{"duckdb", semantic.DuckDB, drv}, queries)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		drv, err := warehouse.Open(t.Context(), warehouse.Conn{Type: warehouse.TypePostgres, URL: pgtest.NewSchema(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { drv.Close() })
		differential(t, diffWarehouse{"postgres", semantic.Postgres, drv}, queries)
	})
}

func differential(t *testing.T, wh diffWarehouse, queries []semantic.MetricQuery) {
	m := diffModel()
	rnd := rand.New(rand.NewPCG(diffSeed, 1))
	mustRun(t, wh.drv, "CREATE TABLE fact (id integer, status text, country text, channel text, is_gift boolean, priority integer, created_at timestamp, ship_date date, customer_id integer, amount numeric(12,2), discount double precision, quantity integer)")
	var rows []factRow
	for i := range diffRows {
		rows = append(rows, genRow(rnd, i, dataStart, dataSpan))
	}
	for i := 0; i < len(rows); i += 1000 {
		mustRun(t, wh.drv, insertSQL(wh.dialect, rows[i:min(i+1000, len(rows))]))
	}

	// by_month is partitioned: its previous build is made now, then the
	// data changes inside the update window (rows updated and added), then
	// only the window is rebuilt and the partitions before it are kept.
	byMonth := m.PreAggregate("by_month")
	start, ok := preagg.WindowStart(byMonth, diffNow)
	if !ok || !start.Equal(time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("window start = %v, %v", start, ok)
	}
	prev := materialize(t, wh, m, byMonth, nil)
	mustRun(t, wh.drv, "UPDATE fact SET amount = amount + 1, discount = discount * 2 WHERE created_at >= "+lit(wh.dialect, start))
	var late []factRow
	for i := range 200 {
		row := genRow(rnd, diffRows+i, start, diffNow.Sub(start))
		if row.created == nil { // a partial refresh sees only rows in its window
			row.created = start.Add(time.Duration(i) * time.Hour)
		}
		late = append(late, row)
	}
	mustRun(t, wh.drv, insertSQL(wh.dialect, late))
	window := materialize(t, wh, m, byMonth, &start)
	served := map[string]result{"by_month": keepPlusWindow(t, prev, window, start, preagg.WindowKeys(byMonth, start, diffNow))}
	if full := materialize(t, wh, m, byMonth, nil); !sameRowSet(full, served["by_month"]) {
		t.Fatalf("kept partitions + rebuilt window (%d rows) differ from a full build (%d rows)", len(served["by_month"].rows), len(full.rows))
	}

	active := map[string]preagg.ActiveBuild{}
	serving := map[string]warehouse.Driver{}
	for i := range m.PreAggregates {
		p := &m.PreAggregates[i]
		res, ok := served[p.Name]
		if !ok {
			res = materialize(t, wh, m, p, nil)
		}
		if len(res.rows) == 0 {
			t.Fatalf("pre-aggregate %s materialized no rows", p.Name)
		}
		serving[p.Name] = load(t, p, res)
		active[p.Name] = preagg.ActiveBuild{BuildUUID: "build-" + p.Name, DefHash: semantic.PreAggHash(m, p), Rows: int64(len(res.rows)), BuiltAt: diffNow, DataAsOf: diffNow}
	}

	checkTraps(t, wh, m, active, serving)

	hits := map[string]int{}
	answered := map[string]int{}
	misses := map[string]int{}
	compared := 0
	for qi, q := range queries {
		r, err := semantic.Resolve(m, q)
		if err != nil {
			t.Fatalf("query %d does not resolve: %v\n%s", qi, err, jsonOf(q))
		}
		wsql, err := semantic.Compile(r, wh.dialect)
		if err != nil {
			t.Fatalf("query %d: compile: %v", qi, err)
		}
		want := mustRun(t, wh.drv, wsql)
		d := preagg.Match(r, active, true, diffNow)
		if d.Hit {
			hits[d.PreAgg.Name]++
		} else {
			misses[d.Reason.Code]++
		}
		// Every pre-aggregate that accepts the query answers it, not only
		// the one Match picks: each must equal the warehouse.
		var accepted []string
		for i := range m.PreAggregates {
			p := &m.PreAggregates[i]
			rsql, err := preagg.Rewrite(r, p)
			if err != nil {
				continue
			}
			accepted = append(accepted, p.Name)
			answered[p.Name]++
			got, err := run(t.Context(), serving[p.Name], rsql)
			if err != nil {
				t.Fatalf("query %d on %s: %v\nSQL:\n%s", qi, p.Name, err, rsql)
			}
			if msg := diffResults(r, want, got); msg != "" {
				t.Fatalf("query %d answered from %s differs from the warehouse: %s\nquery: %s\nwarehouse SQL:\n%s\npre-aggregate SQL:\n%s", qi, p.Name, msg, jsonOf(q), wsql, rsql)
			}
			compared++
		}
		switch {
		case d.Hit:
			for _, name := range accepted {
				if active[name].Rows < d.Build.Rows {
					t.Fatalf("query %d: Match picked %s (%d rows) over the smaller %s (%d rows)", qi, d.PreAgg.Name, d.Build.Rows, name, active[name].Rows)
				}
			}
			if !slices.Contains(accepted, d.PreAgg.Name) {
				t.Fatalf("query %d: Match picked %s, whose Rewrite refuses it", qi, d.PreAgg.Name)
			}
		case len(accepted) > 0:
			t.Fatalf("query %d: Match missed (%+v) though %v accept it", qi, d.Reason, accepted)
		}
	}
	names := make([]string, 0, len(m.PreAggregates))
	for _, p := range m.PreAggregates {
		names = append(names, fmt.Sprintf("%s=%d (answered %d, %d rows)", p.Name, hits[p.Name], answered[p.Name], active[p.Name].Rows))
	}
	codes := make([]string, 0, len(misses))
	for c, n := range misses {
		codes = append(codes, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(codes)
	t.Logf("%s: %d queries, %d pre-aggregate answers compared; hits: %s; misses: %s", wh.name, len(queries), compared, strings.Join(names, ", "), strings.Join(codes, ", "))
	for _, p := range m.PreAggregates {
		if hits[p.Name] == 0 {
			t.Errorf("pre-aggregate %s never won a query: the generator does not exercise it", p.Name)
		}
	}
	for _, c := range []string{api.PreAggMissCustomSQL, api.PreAggMissFieldNotCovered, api.PreAggMissGrain, api.PreAggMissNonAdditive, api.PreAggMissFilterScope} {
		if misses[c] == 0 {
			t.Errorf("no query missed with %s", c)
		}
	}
}

// A trap is a query where a careless matcher gives a wrong answer: Match
// must decide as wanted (the hit it names, or the miss code), and the
// pre-aggregate a careless matcher would use, rewritten without Match's
// checks, must really answer differently on this data, so the rule is
// shown necessary rather than assumed.
type trap struct {
	name  string
	q     semantic.MetricQuery
	want  string // a pre-aggregate name (hit) or a miss code
	naive string // the pre-aggregate whose unchecked answer differs
}

func traps() []trap {
	f := func(id string, op semantic.FilterOperator, vals ...any) semantic.FilterItem {
		return semantic.FilterItem{FilterRule: semantic.FilterRule{Target: semantic.FilterTarget{FieldID: id}, Operator: op, Values: vals}}
	}
	where := func(items ...semantic.FilterItem) semantic.Filters {
		return semantic.Filters{Dimensions: &semantic.FilterGroup{And: items}}
	}
	q := func(dims, mets []string, fs semantic.Filters) semantic.MetricQuery {
		return semantic.MetricQuery{ExploreName: "orders", Dimensions: dims, Metrics: mets, Filters: fs, Limit: 5000}
	}
	shipped := f("orders_status", semantic.OpEquals, "complete", "shipped")
	return []trap{
		{"week never serves month", q([]string{"orders_status", "orders_created_at_month"}, []string{"orders_order_count"}, semantic.Filters{}), "by_month", "by_week"},
		{"week never serves year", q([]string{"orders_created_at_year"}, []string{"orders_amount_sum"}, semantic.Filters{}), "exact_month", "by_week"},
		{"day serves week", q([]string{"orders_created_at_week"}, []string{"orders_amount_min", "orders_amount_count"}, semantic.Filters{}), "by_day", ""},
		{"count_distinct needs the exact grain", q([]string{"orders_country", "orders_created_at_year"}, []string{"orders_customers"}, semantic.Filters{}), api.PreAggMissNonAdditive, "exact_month"},
		{"count_distinct needs the exact dimensions", q([]string{"orders_created_at_month"}, []string{"orders_customers"}, semantic.Filters{}), api.PreAggMissNonAdditive, "exact_month"},
		{"median needs the exact dimensions", q([]string{"orders_country"}, []string{"orders_amount_median"}, semantic.Filters{}), api.PreAggMissNonAdditive, "exact_month"},
		{"count_distinct on an exact match", q([]string{"orders_created_at_month", "orders_country"}, []string{"orders_customers", "orders_amount_p90"}, where(f("orders_country", semantic.OpNotEquals, "FR"))), "exact_month", ""},
		{"count_distinct without dimensions", q(nil, []string{"orders_customers"}, semantic.Filters{}), api.PreAggMissNonAdditive, "gift_priority"},
		{"scope: equal filters", q([]string{"orders_country"}, []string{"orders_amount_avg"}, where(shipped, f("orders_priority", semantic.OpGreaterThan, 1))), "shipped_scope", ""},
		{"scope: narrower", q([]string{"orders_channel"}, []string{"orders_amount_sum"}, where(shipped, f("orders_priority", semantic.OpGreaterThan, 3))), "shipped_scope", ""},
		{"scope: wider (>= is not >)", q([]string{"orders_created_at_day"}, []string{"orders_amount_sum"}, where(shipped, f("orders_priority", semantic.OpGreaterThanOrEqual, 1))), api.PreAggMissFilterScope, "shipped_scope"},
		{"scope: missing", q([]string{"orders_country", "orders_created_at_day"}, []string{"orders_order_count"}, where(f("orders_priority", semantic.OpGreaterThan, 1))), api.PreAggMissFilterScope, "shipped_scope"},
		{"raw time filter on a Monday serves weeks", q([]string{"orders_status", "orders_created_at_week"}, []string{"orders_order_count"}, where(f("orders_created_at", semantic.OpGreaterThanOrEqual, "2024-03-04"))), "by_week", ""},
		{"raw time filter on a Tuesday is not a week boundary", q([]string{"orders_country", "orders_created_at_week"}, []string{"orders_order_count"}, where(f("orders_created_at", semantic.OpLessThan, "2024-03-05"))), "by_day", "by_week"},
		{"raw time filter off a day boundary", q([]string{"orders_status"}, []string{"orders_order_count"}, where(f("orders_created_at", semantic.OpGreaterThanOrEqual, "2024-03-05T10:00:00Z"))), api.PreAggMissGrain, "by_week"},
		{"a date's raw value is its day", q([]string{"orders_ship_date", "orders_status"}, []string{"orders_amount_max"}, where(f("orders_ship_date", semantic.OpNotEquals, "2024-03-05"))), "ship_day", ""},
		{"raw time filter with >", q([]string{"orders_status"}, []string{"orders_order_count"}, where(f("orders_created_at", semantic.OpGreaterThan, "2024-03-05"))), api.PreAggMissGrain, "by_day"},
	}
}

func checkTraps(t *testing.T, wh diffWarehouse, m *semantic.Model, active map[string]preagg.ActiveBuild, serving map[string]warehouse.Driver) {
	t.Helper()
	for _, tr := range traps() {
		r, err := semantic.Resolve(m, tr.q)
		if err != nil {
			t.Fatalf("trap %q: %v", tr.name, err)
		}
		wsql, err := semantic.Compile(r, wh.dialect)
		if err != nil {
			t.Fatal(err)
		}
		want := mustRun(t, wh.drv, wsql)
		d := preagg.Match(r, active, true, diffNow)
		got := ""
		if d.Hit {
			got = d.PreAgg.Name
			rsql, err := preagg.Rewrite(r, d.PreAgg)
			if err != nil {
				t.Fatalf("trap %q: %v", tr.name, err)
			}
			if msg := diffResults(r, want, mustRun(t, serving[got], rsql)); msg != "" {
				t.Fatalf("trap %q served from %s differs: %s", tr.name, got, msg)
			}
		} else {
			got = d.Reason.Code
		}
		if got != tr.want {
			t.Errorf("trap %q: Match gave %s (%+v), want %s", tr.name, got, d.Reason, tr.want)
		}
		if tr.naive == "" {
			continue
		}
		p := m.PreAggregate(tr.naive)
		if _, err := preagg.Rewrite(r, p); err == nil {
			t.Errorf("trap %q: Rewrite accepts %s", tr.name, tr.naive)
		}
		nsql, err := preagg.RewriteUnchecked(r, p)
		if err != nil {
			t.Fatalf("trap %q: %v", tr.name, err)
		}
		if diffResults(r, want, mustRun(t, serving[tr.naive], nsql)) == "" {
			t.Errorf("trap %q: %s's unchecked answer equals the warehouse's: the trap is not shown on this data", tr.name, tr.naive)
		}
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// materialize runs p's plan on the warehouse.
func materialize(t *testing.T, wh diffWarehouse, m *semantic.Model, p *semantic.PreAggregate, from *time.Time) result {
	t.Helper()
	plan, err := preagg.Plan(m, p, wh.dialect, from)
	if err != nil {
		t.Fatalf("plan %s: %v", p.Name, err)
	}
	if (plan.PartitionColumn != "") != (p.Refresh.PartitionBy != "") {
		t.Fatalf("plan %s: partition column %q", p.Name, plan.PartitionColumn)
	}
	return mustRun(t, wh.drv, plan.SQL)
}

// keepPlusWindow is a partial refresh: the previous build's partitions
// before start (preagg.Keep) plus the rebuilt window, whose rows must all
// fall in the window's keys.
func keepPlusWindow(t *testing.T, prev, window result, start time.Time, keys []string) result {
	t.Helper()
	pc := colIndex(prev, preagg.PartitionColumn)
	var objs []api.PartitionObject
	byKey := map[string][][]any{}
	for _, row := range prev.rows {
		k := fmt.Sprint(row[pc])
		if _, seen := byKey[k]; !seen {
			objs = append(objs, api.PartitionObject{Key: k})
		}
		byKey[k] = append(byKey[k], row)
	}
	kept, ok := preagg.Keep(objs, start)
	if !ok || len(kept) == 0 {
		t.Fatalf("Keep(%d objects) = %d, %v", len(objs), len(kept), ok)
	}
	out := result{cols: window.cols}
	for _, o := range kept {
		if o.Key >= keys[0] {
			t.Fatalf("kept partition %s is inside the window %v", o.Key, keys)
		}
		out.rows = append(out.rows, byKey[o.Key]...)
	}
	for _, row := range window.rows {
		if k := fmt.Sprint(row[pc]); !slices.Contains(keys, k) {
			t.Fatalf("rebuilt row in partition %s, outside the window %v", k, keys)
		}
		out.rows = append(out.rows, row)
	}
	return out
}

func colIndex(res result, name string) int {
	for i, c := range res.cols {
		if c.Name == name {
			return i
		}
	}
	panic("no column " + name)
}

func sameRowSet(a, b result) bool {
	key := func(res result) []string {
		var ks []string
		for _, r := range res.rows {
			ks = append(ks, jsonOf(r))
		}
		sort.Strings(ks)
		return ks
	}
	return slices.Equal(key(a), key(b))
}

// load writes a materialization into a DuckDB of its own as the view
// preagg, as a pre-aggregate worker serves it: the partition column is
// not a column of the served files. Rows go through a CSV file (COPY),
// much faster than INSERTs.
func load(t *testing.T, p *semantic.PreAggregate, res result) warehouse.Driver {
	t.Helper()
	drv, err := warehouse.Open(t.Context(), warehouse.Conn{Type: warehouse.TypeDuckDB, URL: ":memory:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	types := make([]string, len(res.cols))
	defs := make([]string, len(res.cols))
	for i, c := range res.cols {
		types[i] = duckType(c, res.rows, i)
		defs[i] = semantic.QuoteIdent(c.Name) + " " + types[i]
	}
	mustRun(t, drv, "CREATE TABLE stored ("+strings.Join(defs, ", ")+")")
	path := filepath.Join(t.TempDir(), p.Name+".csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := csv.NewWriter(f)
	for _, row := range res.rows {
		rec := make([]string, len(row))
		for j, v := range row {
			rec[j] = csvField(res.cols[j], v)
		}
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		t.Fatal(err)
	}
	mustRun(t, drv, "COPY stored FROM "+semantic.Literal(semantic.DuckDB, path)+` (FORMAT csv, HEADER false, NULLSTR '\N')`)
	if n := mustRun(t, drv, "SELECT count(*) FROM stored").rows[0][0]; numberText(n) != strconv.Itoa(len(res.rows)) {
		t.Fatalf("loaded %v rows of %d", n, len(res.rows))
	}
	view := "CREATE VIEW " + semantic.QuoteIdent(preagg.View) + " AS SELECT * FROM stored"
	if p.Refresh.PartitionBy != "" {
		view = "CREATE VIEW " + semantic.QuoteIdent(preagg.View) + " AS SELECT * EXCLUDE (" + semantic.QuoteIdent(preagg.PartitionColumn) + ") FROM stored"
	}
	mustRun(t, drv, view)
	return drv
}

func csvField(c warehouse.Column, v any) string {
	switch {
	case v == nil:
		return `\N`
	case c.Type == warehouse.TypeTimestamp:
		ts, err := time.Parse(time.RFC3339Nano, v.(string))
		if err != nil {
			panic(err)
		}
		return ts.UTC().Format("2006-01-02 15:04:05.999999")
	case c.Type == warehouse.TypeNumber || c.Type == warehouse.TypeInteger:
		return numberText(v)
	}
	return fmt.Sprint(v)
}

// duckType is the DuckDB type a stored column gets: exact decimals stay
// decimal (at the largest scale seen), so re-aggregated sums are exact.
func duckType(c warehouse.Column, rows [][]any, i int) string {
	switch c.Type {
	case warehouse.TypeInteger:
		return "HUGEINT"
	case warehouse.TypeBoolean:
		return "BOOLEAN"
	case warehouse.TypeDate:
		return "DATE"
	case warehouse.TypeTimestamp:
		return "TIMESTAMP"
	case warehouse.TypeNumber:
		nt := strings.ToUpper(c.NativeType)
		if !strings.HasPrefix(nt, "NUMERIC") && !strings.HasPrefix(nt, "DECIMAL") {
			return "DOUBLE"
		}
		scale := 0
		for _, row := range rows {
			var s string
			switch x := row[i].(type) {
			case string:
				s = x
			case float64:
				s = strconv.FormatFloat(x, 'f', -1, 64)
			}
			if _, frac, ok := strings.Cut(s, "."); ok {
				scale = max(scale, len(frac))
			}
		}
		return fmt.Sprintf("DECIMAL(38,%d)", min(scale, 18))
	}
	return "VARCHAR"
}

func numberText(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int64:
		return strconv.FormatInt(x, 10)
	case json.Number:
		return x.String()
	case *big.Int:
		return x.String()
	}
	return fmt.Sprint(v)
}

// diffResults compares a pre-aggregate's answer with the warehouse's:
// the same columns and portable types, the same rows in the same order,
// numbers within 1e-9 relative. Floats summed in another order can differ
// in their last bits, so two rows whose sort keys are that close (a near
// tie) may come in either order, and a LIMIT may cut such a tie apart;
// any other order is checked exactly against the query's ORDER BY.
func diffResults(r *semantic.Resolved, want, got result) string {
	if len(want.cols) != len(got.cols) {
		return fmt.Sprintf("columns %v, want %v", got.cols, want.cols)
	}
	for i := range want.cols {
		if want.cols[i].Name != got.cols[i].Name || want.cols[i].Type != got.cols[i].Type {
			return fmt.Sprintf("column %d is %s %s, want %s %s", i, got.cols[i].Name, got.cols[i].Type, want.cols[i].Name, want.cols[i].Type)
		}
	}
	if len(want.rows) != len(got.rows) {
		return fmt.Sprintf("%d rows, want %d", len(got.rows), len(want.rows))
	}
	if msg := sameRows(want, want.rows, got.rows); msg == "" {
		return ""
	}
	// Not equal position by position: the answer's own order must follow
	// the ORDER BY but for near ties, and the rows, sorted alike on both
	// sides, must be equal (but for a near tie cut by the LIMIT).
	keys := orderKeys(r, want.cols)
	for i := 0; i+1 < len(got.rows); i++ {
		if c, near := compareRows(want.cols, keys, got.rows[i], got.rows[i+1]); c > 0 && !near {
			return fmt.Sprintf("rows %d and %d are out of order: %v before %v", i, i+1, got.rows[i], got.rows[i+1])
		}
	}
	ws, gs := slices.Clone(want.rows), slices.Clone(got.rows)
	for _, rows := range [][][]any{ws, gs} {
		sort.SliceStable(rows, func(i, j int) bool {
			c, _ := compareRowsTol(want.cols, keys, rows[i], rows[j], true)
			return c < 0
		})
	}
	msg := sameRows(want, ws, gs)
	if msg != "" && len(ws) == r.Limit {
		// A LIMIT may cut a near tie: the rows from the first difference
		// on must all tie with the last row, on both sides.
		last := ws[len(ws)-1]
		first := 0
		for first < len(ws) && sameRows(want, ws[first:first+1], gs[first:first+1]) == "" {
			first++
		}
		ok := true
		for _, rows := range [][][]any{ws, gs} {
			for _, row := range rows[first:] {
				if c, _ := compareRowsTol(want.cols, keys, row, last, true); c != 0 {
					ok = false
				}
			}
		}
		if ok {
			return ""
		}
	}
	return msg
}

func sameRows(want result, a, b [][]any) string {
	for i := range a {
		for j := range want.cols {
			if !sameValue(want.cols[j].Type, a[i][j], b[i][j]) {
				return fmt.Sprintf("row %d column %s: %v, want %v (row %v, want %v)", i, want.cols[j].Name, b[i][j], a[i][j], b[i], a[i])
			}
		}
	}
	return ""
}

type orderKey struct {
	col  int
	desc bool
}

// orderKeys restates semantic.Compile's ORDER BY: the query's sorts, else
// the first metric descending, else the first dimension; then every
// dimension as a tie-break.
func orderKeys(r *semantic.Resolved, cols []warehouse.Column) []orderKey {
	idx := func(id string) int {
		for i, c := range cols {
			if c.Name == id {
				return i
			}
		}
		panic("no column " + id)
	}
	var keys []orderKey
	seen := map[string]bool{}
	add := func(id string, desc bool) {
		if !seen[id] {
			seen[id] = true
			keys = append(keys, orderKey{idx(id), desc})
		}
	}
	for _, s := range r.Sorts {
		add(s.Field.ID, s.Descending)
	}
	if len(r.Sorts) == 0 {
		if len(r.Metrics) > 0 {
			add(r.Metrics[0].ID, true)
		} else if len(r.Dimensions) > 0 {
			add(r.Dimensions[0].ID, false)
		}
	}
	for _, f := range r.Dimensions {
		add(f.ID, false)
	}
	return keys
}

// compareRows orders two rows by keys exactly; near reports whether the
// first key that differs holds numbers within the tolerance.
func compareRows(cols []warehouse.Column, keys []orderKey, a, b []any) (int, bool) {
	return compareRowsTol(cols, keys, a, b, false)
}

// compareRowsTol is compareRows; with tol, numbers within the tolerance
// compare equal.
func compareRowsTol(cols []warehouse.Column, keys []orderKey, a, b []any, tol bool) (int, bool) {
	for _, k := range keys {
		x, y := a[k.col], b[k.col]
		typ := cols[k.col].Type
		var c int
		switch {
		case x == nil && y == nil:
			continue
		case x == nil:
			return 1, false // NULLs last, either direction
		case y == nil:
			return -1, false
		case typ == warehouse.TypeNumber || typ == warehouse.TypeInteger:
			if sameValue(typ, x, y) {
				fx, _ := strconv.ParseFloat(numberText(x), 64)
				fy, _ := strconv.ParseFloat(numberText(y), 64)
				if tol || fx == fy {
					continue
				}
				c = cmpFloat(fx, fy)
				if k.desc {
					c = -c
				}
				return c, true
			}
			fx, _ := strconv.ParseFloat(numberText(x), 64)
			fy, _ := strconv.ParseFloat(numberText(y), 64)
			c = cmpFloat(fx, fy)
		case typ == warehouse.TypeBoolean:
			c = cmpFloat(boolNum(x), boolNum(y))
		case typ == warehouse.TypeTimestamp:
			tx, _ := time.Parse(time.RFC3339Nano, x.(string))
			ty, _ := time.Parse(time.RFC3339Nano, y.(string))
			c = tx.Compare(ty)
		default:
			c = strings.Compare(fmt.Sprint(x), fmt.Sprint(y)) // code points, as ORDER BY does
		}
		if c == 0 {
			continue
		}
		if k.desc {
			c = -c
		}
		return c, false
	}
	return 0, false
}

func cmpFloat(x, y float64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func boolNum(v any) float64 {
	if v == true {
		return 1
	}
	return 0
}

func sameValue(typ string, a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if typ == warehouse.TypeNumber || typ == warehouse.TypeInteger {
		x, err1 := strconv.ParseFloat(numberText(a), 64)
		y, err2 := strconv.ParseFloat(numberText(b), 64)
		if err1 != nil || err2 != nil {
			return false
		}
		return math.Abs(x-y) <= 1e-9*math.Max(1, math.Max(math.Abs(x), math.Abs(y)))
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}
