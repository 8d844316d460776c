package preagg

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

func TestWindowStartAndKeys(t *testing.T) {
	t.Parallel()
	p := &semantic.PreAggregate{Name: "p", TimeDimension: "created_at", Granularity: semantic.GrainDay,
		Refresh: semantic.Refresh{PartitionBy: semantic.GrainMonth, UpdateWindow: semantic.Duration(40 * 24 * time.Hour)}}
	at := time.Date(2024, 3, 5, 13, 0, 0, 0, time.UTC)
	start, ok := WindowStart(p, at)
	// 40 days before 5 March is 25 January: the window starts with January.
	if !ok || !start.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("WindowStart = %v, %v", start, ok)
	}
	if got := WindowKeys(p, start, at); !slices.Equal(got, []string{"2024-01-01", "2024-02-01", "2024-03-01"}) {
		t.Fatalf("WindowKeys = %v", got)
	}
	p.Refresh.PartitionBy = semantic.GrainDay
	p.Refresh.UpdateWindow = semantic.Duration(36 * time.Hour)
	start, _ = WindowStart(p, at)
	if got := WindowKeys(p, start, at); !slices.Equal(got, []string{"2024-03-04", "2024-03-05"}) {
		t.Fatalf("day WindowKeys = %v (start %v)", got, start)
	}
	if _, ok := WindowStart(&semantic.PreAggregate{Refresh: semantic.Refresh{PartitionBy: semantic.GrainDay}}, at); ok {
		t.Fatal("no update_window: every refresh is full")
	}
	if _, ok := WindowStart(&semantic.PreAggregate{Refresh: semantic.Refresh{UpdateWindow: semantic.Duration(time.Hour)}}, at); ok {
		t.Fatal("not partitioned: every refresh is full")
	}
	if k := PartitionKey(at, semantic.GrainMonth); k != "2024-03-01" {
		t.Fatalf("PartitionKey = %s", k)
	}
}

func TestKeep(t *testing.T) {
	t.Parallel()
	objs := []api.PartitionObject{{Key: "2024-03-01"}, {Key: NullPartitionKey}, {Key: "2024-01-01"}, {Key: "2024-02-01"}}
	kept, ok := Keep(objs, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC))
	var keys []string
	for _, o := range kept {
		keys = append(keys, o.Key)
	}
	// The NULL-time partition is kept (only a full build rebuilds it); the
	// window's first partition is not.
	if !ok || !slices.Equal(keys, []string{NullPartitionKey, "2024-01-01"}) {
		t.Fatalf("Keep = %v, %v", keys, ok)
	}
	// An unpartitioned active build cannot be split: a full build is needed.
	if _, ok := Keep([]api.PartitionObject{{Key: ""}}, time.Now()); ok {
		t.Fatal("Keep split an unpartitioned build")
	}
}

func TestPlanColumns(t *testing.T) {
	t.Parallel()
	m := testModel()
	p := m.PreAggregate("by_day")
	p.Refresh.PartitionBy = semantic.GrainMonth
	plan, err := Plan(m, p, semantic.Postgres, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.PartitionColumn != PartitionColumn {
		t.Fatalf("partition column %q", plan.PartitionColumn)
	}
	for _, want := range []string{
		`"status" AS "d_status"`,
		`CAST(CAST("created_at" AS TIMESTAMP) AS DATE) AS "t_day_created_at"`,
		`coalesce(CAST(date_trunc('month', CAST("created_at" AS TIMESTAMP)) AS DATE), DATE '0001-01-01') AS "partition_key"`,
		`count(*) AS "m_order_count__count"`,
		`sum((amount)) AS "m_amount_sum__sum"`,
		// average: its sum and its count of non-NULL values, never count(*)
		`sum((amount)) AS "m_amount_avg__sum"`,
		`count((amount)) AS "m_amount_avg__count"`,
		`min((amount)) AS "m_amount_min__min"`,
		"GROUP BY 1, 2, 3, 4",
	} {
		if !strings.Contains(plan.SQL, want) {
			t.Errorf("plan lacks %s:\n%s", want, plan.SQL)
		}
	}
	from := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	plan, err = Plan(m, p, semantic.DuckDB, &from)
	if err != nil || !strings.Contains(plan.SQL, `WHERE CAST("created_at" AS TIMESTAMP) >= TIMESTAMP '2024-03-01 00:00:00'`) {
		t.Fatalf("window plan (%v):\n%s", err, plan.SQL)
	}
	// Scope filters are the plan's WHERE; the exact metrics are stored as values.
	plan, err = Plan(m, m.PreAggregate("complete_only"), semantic.Postgres, nil)
	if err != nil || !strings.Contains(plan.SQL, `WHERE "status" IN ('complete', 'shipped')`) || plan.PartitionColumn != "" {
		t.Fatalf("scoped plan (%v):\n%s", err, plan.SQL)
	}
	plan, err = Plan(m, m.PreAggregate("exact"), semantic.DuckDB, nil)
	if err != nil || !strings.Contains(plan.SQL, `count(DISTINCT (customer_id)) AS "m_customers__value"`) {
		t.Fatalf("exact plan (%v):\n%s", err, plan.SQL)
	}
	bad := *p
	bad.Metrics = []string{"nope"}
	if _, err := Plan(m, &bad, semantic.Postgres, nil); err == nil {
		t.Fatal("a plan of a missing metric")
	}
}

func TestRewriteRefusesWhatMatchRejects(t *testing.T) {
	t.Parallel()
	m := testModel()
	q := query(m).dims("status", "created_at_month").metrics("amount_sum").r
	if _, err := Rewrite(q, m.PreAggregate("by_week")); err == nil || !strings.Contains(err.Error(), api.PreAggMissGrain) {
		t.Fatalf("week rewritten to month: %v", err)
	}
	if _, err := Rewrite(query(m).dims("created_at_year").metrics("customers").r, m.PreAggregate("exact")); err == nil || !strings.Contains(err.Error(), api.PreAggMissNonAdditive) {
		t.Fatalf("count_distinct re-aggregated: %v", err)
	}
	sql, err := Rewrite(q, m.PreAggregate("by_day"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CAST(date_trunc('month', CAST("t_day_created_at" AS TIMESTAMP)) AS DATE) AS "orders_created_at_month"`,
		`sum("m_amount_sum__sum") AS "orders_amount_sum"`,
		`FROM "preagg"`,
		`ORDER BY "orders_amount_sum" DESC NULLS LAST, "orders_status" ASC NULLS LAST, "orders_created_at_month" ASC NULLS LAST`,
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("rewrite lacks %s:\n%s", want, sql)
		}
	}
	// Average is recomputed from its parts; a filter equal to the scope is
	// not re-applied (its field is not stored).
	sql, err = Rewrite(query(m).dims("status").metrics("amount_avg", "order_count").r, m.PreAggregate("by_day"))
	if err != nil || !strings.Contains(sql, `CAST(sum("m_amount_avg__sum") AS DOUBLE PRECISION) / CAST(nullif(sum("m_amount_avg__count"), 0) AS DOUBLE PRECISION)`) ||
		!strings.Contains(sql, `CAST(coalesce(sum("m_order_count__count"), 0) AS BIGINT)`) {
		t.Fatalf("average (%v):\n%s", err, sql)
	}
	sql, err = Rewrite(query(m).dims("country").metrics("amount_sum").where(rule(m, "status", semantic.OpEquals, "shipped", "complete")).r, m.PreAggregate("complete_only"))
	if err != nil || strings.Contains(sql, "WHERE") {
		t.Fatalf("scope filter re-applied (%v):\n%s", err, sql)
	}
}

func TestImplies(t *testing.T) {
	t.Parallel()
	m := testModel()
	r := func(id string, op semantic.FilterOperator, vals ...any) *semantic.Rule {
		return rule(m, id, op, vals...).Rule
	}
	d1, d2 := day("2024-01-01"), day("2024-02-01")
	for i, c := range []struct {
		r, f *semantic.Rule
		want bool
	}{
		{r("status", semantic.OpEquals, "a"), r("status", semantic.OpEquals, "a", "b"), true},
		{r("status", semantic.OpEquals, "a", "c"), r("status", semantic.OpEquals, "a", "b"), false},
		{r("country", semantic.OpEquals, "a"), r("status", semantic.OpEquals, "a"), false}, // another field
		{r("status", semantic.OpNotEquals, "a", "b"), r("status", semantic.OpNotEquals, "a"), true},
		{r("status", semantic.OpNotEquals, "a"), r("status", semantic.OpNotEquals, "a", "b"), false},
		{r("status", semantic.OpEquals, "c"), r("status", semantic.OpNotEquals, "a"), false}, // another class
		{r("status", semantic.OpIsNull), r("status", semantic.OpIsNull), true},
		{r("status", semantic.OpNotNull), r("status", semantic.OpIsNull), false},
		{r("status", semantic.OpStartsWith, "ab"), r("status", semantic.OpStartsWith, "a"), false}, // only equal values
		{r("status", semantic.OpStartsWith, "a"), r("status", semantic.OpStartsWith, "a"), true},
		{r("status", semantic.OpGreaterThan, "b"), r("status", semantic.OpGreaterThan, "a"), false}, // strings: collation
		{r("priority", semantic.OpGreaterThan, 3.0), r("priority", semantic.OpGreaterThanOrEqual, 3.0), true},
		{r("priority", semantic.OpGreaterThanOrEqual, 3.0), r("priority", semantic.OpGreaterThan, 3.0), false},
		{r("priority", semantic.OpLessThan, 3.0), r("priority", semantic.OpLessThanOrEqual, 3.0), true},
		{r("priority", semantic.OpLessThanOrEqual, 3.0), r("priority", semantic.OpLessThan, 3.0), false},
		{r("priority", semantic.OpInBetween, 2.0, 3.0), r("priority", semantic.OpInBetween, 2.0, 3.0), true},
		{r("priority", semantic.OpInBetween, 2.0, 3.0), r("priority", semantic.OpLessThan, 3.0), false},
		{r("priority", semantic.OpInBetween, 2.0, 3.0), r("priority", semantic.OpGreaterThan, 1.0), true},
		{r("priority", semantic.OpLessThan, 3.0), r("priority", semantic.OpGreaterThan, 1.0), false},
		{r("priority", semantic.OpEquals, 3.0), r("priority", semantic.OpGreaterThan, 1.0), false}, // another class
		{r("created_at", semantic.OpGreaterThanOrEqual, d2), r("created_at", semantic.OpGreaterThanOrEqual, d1), true},
		{r("created_at", semantic.OpGreaterThanOrEqual, d1), r("created_at", semantic.OpGreaterThanOrEqual, d2), false},
		{r("created_at_month", semantic.OpGreaterThanOrEqual, d2), r("created_at", semantic.OpGreaterThanOrEqual, d1), false}, // another grain
	} {
		if got := implies(c.r, c.f); got != c.want {
			t.Errorf("%d: implies(%s %s %v, %s %s %v) = %v", i, c.r.Field.ID, c.r.Operator, c.r.Values, c.f.Field.ID, c.f.Operator, c.f.Values, got)
		}
	}
}
