package semantic

import (
	"strings"
	"testing"
	"time"
)

func testModel() *Model {
	return &Model{
		Name:  "orders",
		Table: "public.orders",
		Dimensions: []Dimension{
			{Name: "status", Type: DimString},
			{Name: "amount_band", Type: DimNumber, SQL: "floor(${TABLE}.amount / 10)"},
			{Name: "is_paid", Type: DimBoolean, SQL: "paid"},
			{Name: "created_at", Type: DimTimestamp},
			{Name: "order_date", Type: DimDate, SQL: "created_at"},
		},
		Metrics: []Metric{
			{Name: "count", Type: MetricCount},
			{Name: "customers", Type: MetricCountDistinct, SQL: "customer_id"},
			{Name: "amount", Type: MetricSum},
			{Name: "min_amount", Type: MetricMin, SQL: "amount"},
			{Name: "max_amount", Type: MetricMax, SQL: "amount"},
			{Name: "avg_amount", Type: MetricAverage, SQL: "amount"},
			{Name: "median_amount", Type: MetricMedian, SQL: "amount"},
			{Name: "p90_amount", Type: MetricPercentile, SQL: "amount", Percentile: 90},
		},
		PreAggregates: []PreAggregate{{
			Name: "daily", Dimensions: []string{"status"}, Metrics: []string{"count", "amount"},
			TimeDimension: "created_at", Granularity: GrainDay,
			Filters: []FilterRule{{Target: FilterTarget{FieldID: "status"}, Operator: OpNotEquals, Values: []any{"cancelled"}}},
		}},
	}
}

func TestQuoteIdent(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{`a`: `"a"`, `a"b`: `"a""b"`, ``: `""`, `"; drop`: `"""; drop"`} {
		if got := QuoteIdent(in); got != want {
			t.Errorf("QuoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestLiteral(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 1, 2, 10, 30, 0, 500000000, time.FixedZone("x", 3600))
	tests := []struct {
		d    Dialect
		v    any
		want string
	}{
		{Postgres, nil, "NULL"},
		{DuckDB, true, "TRUE"},
		{DuckDB, false, "FALSE"},
		{Postgres, 1.5, "1.5"},
		{Postgres, -2.0, "(-2)"},
		{Postgres, 1e21, "1e+21"},
		{Postgres, 7, "7"},
		{Postgres, int64(-7), "(-7)"},
		{Postgres, "it's", "'it''s'"},
		{DuckDB, "it's", "'it''s'"},
		{Postgres, `a\'b`, `E'a\\''b'`},
		{DuckDB, `a\'b`, `'a\''b'`},
		{Postgres, time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), "DATE '2024-01-02'"},
		{DuckDB, ts, "TIMESTAMP '2024-01-02 09:30:00.5'"},
		{Postgres, []int{1}, "'[1]'"},
	}
	for _, tt := range tests {
		if got := Literal(tt.d, tt.v); got != tt.want {
			t.Errorf("Literal(%s, %#v) = %s, want %s", tt.d, tt.v, got, tt.want)
		}
	}
}

func TestFromClause(t *testing.T) {
	t.Parallel()
	tests := []struct {
		m    Model
		want string
	}{
		{Model{Table: "orders"}, "orders AS t"},
		{Model{Table: `analytics."Orders"`}, `analytics."Orders" AS t`},
		{Model{Table: "db.s.orders"}, "db.s.orders AS t"},
		{Model{Table: "orders; drop table x"}, `"orders; drop table x" AS t`},
		{Model{Table: `a."b"; drop"`}, `"a.""b""; drop""" AS t`},
		{Model{SQL: "select * from x -- all;\n;  "}, "(\nselect * from x -- all\n) AS t"},
	}
	for _, tt := range tests {
		if got := FromClause(&tt.m); got != tt.want {
			t.Errorf("FromClause(%+v) = %q, want %q", tt.m, got, tt.want)
		}
	}
}

func TestDimExpr(t *testing.T) {
	t.Parallel()
	m := testModel()
	ts, date := m.Dimension("created_at"), m.Dimension("order_date")
	tests := []struct {
		dim  *Dimension
		g    Grain
		want string
		typ  DimType
	}{
		{m.Dimension("status"), "", `"status"`, DimString},
		{m.Dimension("amount_band"), "", `(floor(t.amount / 10))`, DimNumber},
		{ts, "", `CAST("created_at" AS TIMESTAMP)`, DimTimestamp},
		{ts, GrainHour, `date_trunc('hour', CAST("created_at" AS TIMESTAMP))`, DimTimestamp},
		{ts, GrainDay, `CAST(CAST("created_at" AS TIMESTAMP) AS DATE)`, DimDate},
		{ts, GrainWeek, `CAST(date_trunc('week', CAST("created_at" AS TIMESTAMP)) AS DATE)`, DimDate},
		{ts, GrainYear, `CAST(date_trunc('year', CAST("created_at" AS TIMESTAMP)) AS DATE)`, DimDate},
		{date, "", `CAST((created_at) AS DATE)`, DimDate},
		{date, GrainMonth, `CAST(date_trunc('month', CAST((created_at) AS TIMESTAMP)) AS DATE)`, DimDate},
		{&Dimension{Name: "x", Type: DimDate, SQL: "d -- note"}, GrainQuarter, "CAST(date_trunc('quarter', CAST((d -- note\n) AS TIMESTAMP)) AS DATE)", DimDate},
	}
	for _, tt := range tests {
		for _, d := range []Dialect{Postgres, DuckDB} {
			if got := DimExpr(d, m, tt.dim, tt.g); got != tt.want {
				t.Errorf("DimExpr(%s, %s, %q) = %s, want %s", d, tt.dim.Name, tt.g, got, tt.want)
			}
		}
		if got := DimResultType(tt.dim, tt.g); got != tt.typ {
			t.Errorf("DimResultType(%s, %q) = %s, want %s", tt.dim.Name, tt.g, got, tt.typ)
		}
	}
}

func TestMetricAggExpr(t *testing.T) {
	t.Parallel()
	m := testModel()
	want := map[string][2]string{ // postgres, duckdb
		"count":         {"count(*)", "count(*)"},
		"customers":     {"count(DISTINCT (customer_id))", "count(DISTINCT (customer_id))"},
		"amount":        {`sum("amount")`, `sum("amount")`},
		"min_amount":    {"min((amount))", "min((amount))"},
		"max_amount":    {"max((amount))", "max((amount))"},
		"avg_amount":    {"CAST(avg((amount)) AS DOUBLE PRECISION)", "CAST(avg((amount)) AS DOUBLE PRECISION)"},
		"median_amount": {"percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST((amount) AS DOUBLE PRECISION))", "quantile_cont(CAST((amount) AS DOUBLE PRECISION), 0.5)"},
		"p90_amount":    {"percentile_cont(0.9) WITHIN GROUP (ORDER BY CAST((amount) AS DOUBLE PRECISION))", "quantile_cont(CAST((amount) AS DOUBLE PRECISION), 0.9)"},
	}
	for i := range m.Metrics {
		met := &m.Metrics[i]
		for j, d := range []Dialect{Postgres, DuckDB} {
			if got := MetricAggExpr(d, m, met); got != want[met.Name][j] {
				t.Errorf("MetricAggExpr(%s, %s) = %s, want %s", d, met.Name, got, want[met.Name][j])
			}
		}
	}
	if got := MetricAggExpr(Postgres, m, &Metric{Name: "n", Type: MetricCount, SQL: "id"}); got != "count((id))" {
		t.Errorf("count with sql = %s", got)
	}
}

func rule(f Field, op FilterOperator, vals ...any) *Cond {
	return &Cond{Rule: &Rule{Field: f, Operator: op, Values: vals}}
}

func TestCondSQL(t *testing.T) {
	t.Parallel()
	m := testModel()
	status := Field{ID: "orders_status", Dim: m.Dimension("status")}
	amt := Field{ID: "orders_amount_band", Dim: m.Dimension("amount_band")}
	ts := Field{ID: "orders_created_at", Dim: m.Dimension("created_at")}
	day := Field{ID: "orders_created_at_day", Dim: m.Dimension("created_at"), Grain: GrainDay}
	jan2 := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
	col := func(f Field) string { return "c." + QuoteIdent(f.ID) }
	tests := []struct {
		c    *Cond
		want string
	}{
		{nil, "TRUE"},
		{&Cond{}, "TRUE"},
		{&Cond{Or: true}, "FALSE"},
		{rule(status, OpEquals, "a"), `c."orders_status" IN ('a')`},
		{rule(status, OpEquals, "a", "b'c"), `c."orders_status" IN ('a', 'b''c')`},
		{rule(status, OpNotEquals, "a"), `(c."orders_status" IS NULL OR c."orders_status" NOT IN ('a'))`},
		{rule(status, OpIsNull), `c."orders_status" IS NULL`},
		{rule(status, OpNotNull), `c."orders_status" IS NOT NULL`},
		{rule(amt, OpGreaterThan, 1.5), `c."orders_amount_band" > 1.5`},
		{rule(amt, OpLessThanOrEqual, -1.0), `c."orders_amount_band" <= (-1)`},
		{rule(amt, OpInBetween, 1.0, 2.0), `(c."orders_amount_band" >= 1 AND c."orders_amount_band" <= 2)`},
		{rule(status, OpStartsWith, "50%_off!"), `c."orders_status" LIKE '50!%!_off!!%' ESCAPE '!'`},
		{rule(status, OpEndsWith, "x", "y"), `(c."orders_status" LIKE '%x' ESCAPE '!' OR c."orders_status" LIKE '%y' ESCAPE '!')`},
		{rule(status, OpInclude, `a\b`), `c."orders_status" LIKE E'%a\\b%' ESCAPE '!'`},
		{rule(ts, OpGreaterThanOrEqual, jan2), `c."orders_created_at" >= TIMESTAMP '2024-01-02 00:00:00'`},
		{rule(day, OpEquals, jan2), `c."orders_created_at_day" IN (DATE '2024-01-02')`},
		{&Cond{Items: []*Cond{rule(status, OpIsNull), {Or: true, Items: []*Cond{rule(amt, OpEquals, 1.0), rule(amt, OpEquals, 2.0)}}}},
			`(c."orders_status" IS NULL AND (c."orders_amount_band" IN (1) OR c."orders_amount_band" IN (2)))`},
	}
	for _, tt := range tests {
		got, err := CondSQL(Postgres, tt.c, col)
		if err != nil {
			t.Errorf("CondSQL: %v", err)
			continue
		}
		if got != tt.want {
			t.Errorf("CondSQL =\n %s\nwant\n %s", got, tt.want)
		}
	}
	for _, c := range []*Cond{rule(status, OpEquals), rule(amt, OpGreaterThan), rule(amt, OpInBetween, 1.0), rule(status, "like", "x"), rule(amt, OpStartsWith, 1.0)} {
		if s, err := CondSQL(DuckDB, c, col); err == nil {
			t.Errorf("CondSQL(%+v) = %s, want an error", c.Rule, s)
		}
	}
}

func TestPreAggHash(t *testing.T) {
	t.Parallel()
	base := testModel()
	h := PreAggHash(base, &base.PreAggregates[0])
	if len(h) != 64 {
		t.Fatalf("hash %q", h)
	}
	same := []func(m *Model){
		func(m *Model) { m.Description = "changed" },
		func(m *Model) { m.PreAggregates[0].Refresh.Cron = "0 * * * *" },
		func(m *Model) { m.PreAggregates[0].MaxRows = 10 },
		func(m *Model) { m.PreAggregates[0].Pos = Pos{Line: 9} },
		func(m *Model) { m.Metrics[1].SQL = "other" }, // not used by the pre-aggregate
		func(m *Model) { m.Dimensions = append(m.Dimensions, Dimension{Name: "new", Type: DimString}) },
	}
	for i, f := range same {
		m := testModel()
		f(m)
		if got := PreAggHash(m, &m.PreAggregates[0]); got != h {
			t.Errorf("change %d changed the hash", i)
		}
	}
	differ := []func(m *Model){
		func(m *Model) { m.Table = "other" },
		func(m *Model) { m.Dimensions[0].SQL = "lower(status)" },
		func(m *Model) { m.Dimensions[3].Type = DimDate },
		func(m *Model) { m.Metrics[2].SQL = "amount * 2" },
		func(m *Model) { m.Metrics[0].Type = MetricCountDistinct },
		func(m *Model) { m.PreAggregates[0].Granularity = GrainHour },
		func(m *Model) { m.PreAggregates[0].Filters[0].Values = []any{"x"} },
		func(m *Model) { m.PreAggregates[0].Filters = nil },
		func(m *Model) { m.PreAggregates[0].Dimensions = append(m.PreAggregates[0].Dimensions, "is_paid") },
		func(m *Model) { m.PreAggregates[0].Refresh.PartitionBy = GrainMonth },
	}
	for i, f := range differ {
		m := testModel()
		f(m)
		if got := PreAggHash(m, &m.PreAggregates[0]); got == h {
			t.Errorf("change %d kept the hash", i)
		}
	}
	mh := ModelHash(base)
	m := testModel()
	m.Pos, m.Dimensions[0].Pos, m.PreAggregates[0].Filters[0].Pos = Pos{Line: 3}, Pos{Line: 4}, Pos{Line: 5}
	if ModelHash(m) != mh {
		t.Error("positions changed the model hash")
	}
	m.Description = "x"
	if ModelHash(m) == mh {
		t.Error("a description change kept the model hash")
	}
	if base.Dimensions[0].Pos != (Pos{}) || strings.Contains(mh, " ") {
		t.Error("ModelHash changed its argument")
	}
}

func TestScopeCond(t *testing.T) {
	t.Parallel()
	m := testModel()
	c, err := ScopeCond(m, &m.PreAggregates[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := CondSQL(DuckDB, c, func(f Field) string { return QuoteIdent(f.ID) })
	if err != nil || got != `("orders_status" IS NULL OR "orders_status" NOT IN ('cancelled'))` {
		t.Errorf("scope = %s, %v", got, err)
	}
	p := PreAggregate{Name: "x", Filters: []FilterRule{{Target: FilterTarget{FieldID: "orders_amount_band"}, Operator: OpGreaterThan, Values: []any{"abc"}}}}
	if _, err := ScopeCond(m, &p); err == nil || err.(*QueryError).Code != CodeInvalidFilter {
		t.Errorf("bad value: %v", err)
	}
	p.Filters[0].Target.FieldID = "count"
	if _, err := ScopeCond(m, &p); err == nil || err.(*QueryError).Code != CodeUnknownField {
		t.Errorf("metric field: %v", err)
	}
	if c, err := ScopeCond(m, &PreAggregate{}); c != nil || err != nil {
		t.Errorf("no filters = %v, %v", c, err)
	}
}
