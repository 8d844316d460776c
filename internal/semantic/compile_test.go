package semantic

import "testing"

func TestCompileGolden(t *testing.T) {
	t.Parallel()
	ms, err := ParseModelsDoc("x", []byte(exampleDoc))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Resolve(&ms[0], MetricQuery{ExploreName: "orders", Dimensions: []string{"status", "created_at_month"}, Metrics: []string{"revenue", "p95_order"},
		Filters: Filters{
			Dimensions: &FilterGroup{And: []FilterItem{{FilterRule: FilterRule{Target: FilterTarget{FieldID: "status"}, Operator: OpNotEquals, Values: []any{"cancelled"}}}}},
			Metrics:    &FilterGroup{And: []FilterItem{{FilterRule: FilterRule{Target: FilterTarget{FieldID: "revenue"}, Operator: OpGreaterThan, Values: []any{100}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Dialect]string{
		Postgres: `SELECT * FROM (
SELECT "status" AS "orders_status",
  CAST(date_trunc('month', CAST("created_at" AS TIMESTAMP)) AS DATE) AS "orders_created_at_month",
  sum((amount)) AS "orders_revenue",
  percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST((amount) AS DOUBLE PRECISION)) AS "orders_p95_order"
FROM analytics.orders AS t
WHERE ("status" IS NULL OR "status" NOT IN ('cancelled'))
GROUP BY 1, 2
HAVING sum((amount)) > 100
) AS q
ORDER BY "orders_revenue" DESC NULLS LAST, CAST("orders_status" AS TEXT) COLLATE "C" ASC NULLS LAST, "orders_created_at_month" ASC NULLS LAST
LIMIT 500`,
		DuckDB: `SELECT * FROM (
SELECT "status" AS "orders_status",
  CAST(date_trunc('month', CAST("created_at" AS TIMESTAMP)) AS DATE) AS "orders_created_at_month",
  sum((amount)) AS "orders_revenue",
  quantile_cont(CAST((amount) AS DOUBLE PRECISION), 0.95) AS "orders_p95_order"
FROM analytics.orders AS t
WHERE ("status" IS NULL OR "status" NOT IN ('cancelled'))
GROUP BY 1, 2
HAVING sum((amount)) > 100
) AS q
ORDER BY "orders_revenue" DESC NULLS LAST, "orders_status" ASC NULLS LAST, "orders_created_at_month" ASC NULLS LAST
LIMIT 500`,
	}
	for d, w := range want {
		got, err := Compile(r, d)
		if err != nil || got != w {
			t.Errorf("Compile(%s) =\n%s\n%v\nwant\n%s", d, got, err, w)
		}
	}
	// Only dimensions: no aggregate, the first dimension orders.
	r, _ = Resolve(&ms[0], MetricQuery{ExploreName: "orders", Dimensions: []string{"is_paid"}, Limit: 3})
	got, _ := Compile(r, DuckDB)
	if w := "SELECT * FROM (\nSELECT (paid_at IS NOT NULL) AS \"orders_is_paid\"\nFROM analytics.orders AS t\nGROUP BY 1\n) AS q\nORDER BY \"orders_is_paid\" ASC NULLS LAST\nLIMIT 3"; got != w {
		t.Errorf("dimensions only =\n%s\nwant\n%s", got, w)
	}
	if _, err := Compile(r, "mysql"); err == nil {
		t.Error("Compile for an unknown dialect succeeded")
	}
	if _, err := Compile(&Resolved{Model: &ms[0]}, DuckDB); err == nil {
		t.Error("Compile of no fields succeeded")
	}
}
