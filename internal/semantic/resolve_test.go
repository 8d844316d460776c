package semantic

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	m := testModel()
	r, err := Resolve(m, MetricQuery{ExploreName: "orders",
		Dimensions: []string{"orders_status", "created_at_week", "orders_order_date"},
		Metrics:    []string{"count", "orders_avg_amount", "orders_n"},
		Filters: Filters{
			Dimensions: &FilterGroup{And: []FilterItem{
				{FilterRule: FilterRule{Target: FilterTarget{FieldID: "orders_created_at"}, Operator: OpInBetween, Values: []any{"2024-01-01", "2024-02-01T10:00:00+01:00"}}},
				{Or: []FilterItem{
					{FilterRule: FilterRule{Target: FilterTarget{FieldID: "is_paid"}, Operator: OpEquals, Values: []any{"true"}}},
					{FilterRule: FilterRule{Target: FilterTarget{FieldID: "amount_band"}, Operator: OpLessThan, Values: []any{json.Number("3")}}},
				}},
				{And: []FilterItem{}},
			}},
			Metrics: &FilterGroup{And: []FilterItem{{FilterRule: FilterRule{Target: FilterTarget{FieldID: "orders_n"}, Operator: OpGreaterThan, Values: []any{"2"}}}}},
		},
		Sorts:             []Sort{{FieldID: "created_at_week"}, {FieldID: "count", Descending: true}},
		AdditionalMetrics: []AdditionalMetric{{Name: "n", Table: "orders", Type: MetricCount}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(fs []Field) string {
		var s []string
		for _, f := range fs {
			s = append(s, f.ID)
		}
		return strings.Join(s, ",")
	}
	if got := ids(r.Dimensions); got != "orders_status,orders_created_at_week,orders_order_date" {
		t.Errorf("dimensions %s", got)
	}
	if r.Dimensions[1].Grain != GrainWeek || r.Dimensions[1].Dim.Name != "created_at" || r.Dimensions[2].Grain != "" {
		t.Errorf("grains %+v", r.Dimensions)
	}
	if got := ids(r.Metrics); got != "orders_count,orders_avg_amount,orders_n" || r.Metrics[2].Custom == nil || r.Metrics[0].Metric == nil {
		t.Errorf("metrics %s", got)
	}
	if r.Limit != DefaultLimit {
		t.Errorf("limit %d", r.Limit)
	}
	between := r.Where.Items[0].Rule
	want := []any{time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2024, 2, 1, 9, 0, 0, 0, time.UTC)}
	if between.Values[0] != want[0] || between.Values[1] != want[1] {
		t.Errorf("between values %v", between.Values)
	}
	or := r.Where.Items[1]
	if !or.Or || or.Items[0].Rule.Values[0] != true || or.Items[1].Rule.Values[0] != 3.0 {
		t.Errorf("or group %+v %+v", or.Items[0].Rule, or.Items[1].Rule)
	}
	if r.Having.Items[0].Rule.Values[0] != 2.0 || r.Having.Items[0].Rule.Field.Custom == nil {
		t.Errorf("having %+v", r.Having.Items[0].Rule)
	}
	if len(r.Sorts) != 2 || r.Sorts[0].Field.ID != "orders_created_at_week" || !r.Sorts[1].Descending {
		t.Errorf("sorts %+v", r.Sorts)
	}
	if _, err := Compile(r, Postgres); err != nil {
		t.Error(err)
	}
	// A disabled rule is no condition (nor checked), as in Lightdash.
	r, err = Resolve(m, MetricQuery{ExploreName: "orders", Metrics: []string{"count"}, Filters: Filters{Dimensions: &FilterGroup{And: []FilterItem{
		{FilterRule: FilterRule{Target: FilterTarget{FieldID: "is_paid"}, Operator: OpGreaterThan, Disabled: true}},
		{FilterRule: FilterRule{Target: FilterTarget{FieldID: "status"}, Operator: OpIsNull}}}}}})
	if err != nil || len(r.Where.Items) != 1 || r.Where.Items[0].Rule.Field.ID != "orders_status" {
		t.Errorf("disabled rule: %+v, %v", r, err)
	}
	// An empty filter group is no filter.
	r, err = Resolve(m, MetricQuery{ExploreName: "orders", Metrics: []string{"count"}, Filters: Filters{Dimensions: &FilterGroup{}}, Limit: MaxLimit})
	if err != nil || r.Where != nil || r.Limit != MaxLimit {
		t.Errorf("empty group: %+v, %v", r, err)
	}
}

func TestResolveErrors(t *testing.T) {
	t.Parallel()
	m := testModel()
	m.Dimensions = append(m.Dimensions, Dimension{Name: "orders_status", Type: DimString}) // bare "orders_status" is ambiguous only if not canonical
	rule := func(field string, op FilterOperator, vals ...any) *FilterGroup {
		return &FilterGroup{And: []FilterItem{{FilterRule: FilterRule{Target: FilterTarget{FieldID: field}, Operator: op, Values: vals}}}}
	}
	q := func(f func(*MetricQuery)) MetricQuery {
		mq := MetricQuery{ExploreName: "orders", Dimensions: []string{"status"}, Metrics: []string{"count"}}
		f(&mq)
		return mq
	}
	deep := &FilterGroup{}
	items := &deep.And
	for range 20 {
		*items = []FilterItem{{}}
		items = &(*items)[0].And
	}
	*items = []FilterItem{{FilterRule: FilterRule{Target: FilterTarget{FieldID: "status"}, Operator: OpIsNull}}}
	tests := []struct {
		name  string
		q     MetricQuery
		code  string
		field string
		msg   string
	}{
		{"model", q(func(q *MetricQuery) { q.ExploreName = "customers" }), CodeUnknownModel, "", `unknown model "customers"`},
		{"dimension", q(func(q *MetricQuery) { q.Dimensions = []string{"orders_stauts"} }), CodeUnknownField, "orders_stauts", `did you mean "orders_status"`},
		{"metric", q(func(q *MetricQuery) { q.Metrics = []string{"revenue"} }), CodeUnknownField, "revenue", "unknown field"},
		{"hour of a date", q(func(q *MetricQuery) { q.Dimensions = []string{"order_date_hour"} }), CodeUnknownField, "order_date_hour", ""},
		{"grain of a string", q(func(q *MetricQuery) { q.Dimensions = []string{"status_day"} }), CodeUnknownField, "status_day", ""},
		{"filter field", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("nope", OpIsNull) }), CodeUnknownField, "nope", ""},
		{"sort field", q(func(q *MetricQuery) { q.Sorts = []Sort{{FieldID: "nope"}} }), CodeUnknownField, "nope", ""},
		{"gt on boolean", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("is_paid", OpGreaterThan, true) }), CodeInvalidFilter, "is_paid", "does not apply to a boolean"},
		{"abc for a number", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("amount_band", OpEquals, "abc") }), CodeInvalidFilter, "amount_band", `"abc" is not a number`},
		{"bad date", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("created_at", OpGreaterThan, "2024-13-01") }), CodeInvalidFilter, "created_at", "not a date"},
		{"number date", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("created_at", OpGreaterThan, 5) }), CodeInvalidFilter, "created_at", "not a date"},
		{"unknown operator", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("status", "like", "a") }), CodeInvalidFilter, "status", `unknown operator "like"`},
		{"startsWith number", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("amount_band", OpStartsWith, "1") }), CodeInvalidFilter, "amount_band", "does not apply"},
		{"no values", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("status", OpEquals) }), CodeInvalidFilter, "status", "at least one value"},
		{"between one", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("amount_band", OpInBetween, 1) }), CodeInvalidFilter, "amount_band", "two values"},
		{"object value", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("status", OpEquals, map[string]any{}) }), CodeInvalidFilter, "status", "an object"},
		{"NUL", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("status", OpEquals, "a\x00") }), CodeInvalidFilter, "status", "NUL"},
		{"metric under dimensions", q(func(q *MetricQuery) { q.Filters.Dimensions = rule("count", OpGreaterThan, 1) }), CodeInvalidFilter, "count", "filters.metrics"},
		{"dimension under metrics", q(func(q *MetricQuery) { q.Filters.Metrics = rule("status", OpIsNull) }), CodeInvalidFilter, "status", "filters.dimensions"},
		{"metric value", q(func(q *MetricQuery) { q.Filters.Metrics = rule("count", OpGreaterThan, "x") }), CodeInvalidFilter, "count", "not a number"},
		{"and and or", q(func(q *MetricQuery) {
			q.Filters.Dimensions = &FilterGroup{And: rule("status", OpIsNull).And, Or: rule("status", OpIsNull).And}
		}), CodeInvalidFilter, "", "both and and or"},
		{"empty item", q(func(q *MetricQuery) { q.Filters.Dimensions = &FilterGroup{And: []FilterItem{{}}} }), CodeInvalidFilter, "", "no target"},
		{"too deep", q(func(q *MetricQuery) { q.Filters.Dimensions = deep }), CodeInvalidFilter, "", "nested deeper"},
		{"no fields", q(func(q *MetricQuery) { q.Dimensions, q.Metrics = nil, nil }), CodeInvalidQuery, "", "no fields"},
		{"limit", q(func(q *MetricQuery) { q.Limit = MaxLimit + 1 }), CodeInvalidQuery, "", "limit 5001"},
		{"negative limit", q(func(q *MetricQuery) { q.Limit = -1 }), CodeInvalidQuery, "", "limit -1"},
		{"sort not in query", q(func(q *MetricQuery) { q.Sorts = []Sort{{FieldID: "amount"}} }), CodeInvalidQuery, "amount", "not a dimension or metric of the query"},
		{"sort twice", q(func(q *MetricQuery) { q.Sorts = []Sort{{FieldID: "count"}, {FieldID: "orders_count"}} }), CodeInvalidQuery, "orders_count", "twice"},
		{"listed twice", q(func(q *MetricQuery) { q.Metrics = []string{"count", "orders_count"} }), CodeInvalidQuery, "orders_count", "twice"},
		{"metric as dimension", q(func(q *MetricQuery) { q.Dimensions = []string{"count"} }), CodeInvalidQuery, "count", "is a metric"},
		{"dimension as metric", q(func(q *MetricQuery) { q.Metrics = []string{"status"} }), CodeInvalidQuery, "status", "is a dimension"},
		{"table calculations", q(func(q *MetricQuery) { q.TableCalculations = []json.RawMessage{json.RawMessage(`{}`)} }), CodeInvalidQuery, "", "tableCalculations are not supported"},
		{"custom dimensions", q(func(q *MetricQuery) { q.CustomDimensions = []json.RawMessage{json.RawMessage(`{}`)} }), CodeInvalidQuery, "", "customDimensions are not supported"},
		{"custom without sql", q(func(q *MetricQuery) { q.AdditionalMetrics = []AdditionalMetric{{Name: "x", Type: MetricSum}} }), CodeInvalidQuery, "orders_x", "sql is required"},
		{"custom name clash", q(func(q *MetricQuery) {
			q.AdditionalMetrics = []AdditionalMetric{{Name: "amount", Type: MetricSum, SQL: "1"}}
		}), CodeInvalidQuery, "orders_amount", "already a field"},
		{"custom type", q(func(q *MetricQuery) {
			q.AdditionalMetrics = []AdditionalMetric{{Name: "x", Type: "percentile", SQL: "1"}}
		}), CodeInvalidQuery, "orders_x", "type"},
		{"custom table", q(func(q *MetricQuery) {
			q.AdditionalMetrics = []AdditionalMetric{{Name: "x", Table: "t2", Type: MetricSum, SQL: "1"}}
		}), CodeInvalidQuery, "orders_x", "not the explore"},
		{"custom name", q(func(q *MetricQuery) {
			q.AdditionalMetrics = []AdditionalMetric{{Name: "X y", Type: MetricSum, SQL: "1"}}
		}), CodeInvalidQuery, "", "name must match"},
	}
	for _, tt := range tests {
		_, err := Resolve(m, tt.q)
		var qe *QueryError
		if !errors.As(err, &qe) {
			t.Errorf("%s: err = %v, want a *QueryError", tt.name, err)
			continue
		}
		if qe.Code != tt.code || (tt.field != "" && qe.FieldID != tt.field) || !strings.Contains(qe.Message, tt.msg) {
			t.Errorf("%s: got %s %q %q, want %s %q containing %q", tt.name, qe.Code, qe.FieldID, qe.Message, tt.code, tt.field, tt.msg)
		}
	}
}

func TestResolveAmbiguousBareName(t *testing.T) {
	t.Parallel()
	// "a_day" is both dimension a at day and the dimension a_day: the
	// canonical ids tell them apart, the bare one does not.
	m := &Model{Name: "m", Table: "t", Dimensions: []Dimension{{Name: "a", Type: DimTimestamp}, {Name: "a_day", Type: DimDate}}}
	_, err := Resolve(m, MetricQuery{ExploreName: "m", Dimensions: []string{"a_day"}})
	var qe *QueryError
	if !errors.As(err, &qe) || qe.Code != CodeUnknownField || !strings.Contains(qe.Message, "ambiguous") {
		t.Fatalf("err = %v", err)
	}
	r, err := Resolve(m, MetricQuery{ExploreName: "m", Dimensions: []string{"m_a_day"}})
	if err != nil || r.Dimensions[0].Grain != GrainDay {
		t.Fatalf("canonical: %+v %v", r, err)
	}
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{
		`{"exploreName":"orders","dimensions":["status"],"metrics":["count"]}`,
		`{"exploreName":"orders","dimensions":["created_at_week"],"metrics":["avg_amount"],"filters":{"dimensions":{"and":[{"target":{"fieldId":"created_at"},"operator":"inBetween","values":["2024-01-01","2024-02-01"]}]}},"sorts":[{"fieldId":"created_at_week","descending":true}],"limit":10}`,
		`{"exploreName":"orders","metrics":["count"],"filters":{"metrics":{"or":[{"target":{"fieldId":"count"},"operator":"greaterThan","values":[1]},{"and":[]}]}}}`,
		`{"exploreName":"orders","dimensions":["status"],"filters":{"dimensions":{"and":[{"target":{"fieldId":"status"},"operator":"include","values":["%'\\"]}]}}}`,
		`{"exploreName":"orders","metrics":["orders_x"],"additionalMetrics":[{"name":"x","type":"sum","sql":"amount"}]}`,
	} {
		f.Add([]byte(s))
	}
	m := testModel()
	f.Fuzz(func(t *testing.T, data []byte) {
		var q MetricQuery
		if json.Unmarshal(data, &q) != nil {
			return
		}
		r, err := Resolve(m, q)
		if err != nil {
			var qe *QueryError
			if !errors.As(err, &qe) || qe.Code == "" || qe.Message == "" {
				t.Fatalf("Resolve error %v is not a typed QueryError", err)
			}
			return
		}
		if r.Limit < 1 || r.Limit > MaxLimit || len(r.Dimensions)+len(r.Metrics) == 0 {
			t.Fatalf("resolved %+v", r)
		}
		for _, d := range []Dialect{Postgres, DuckDB} {
			sql, err := Compile(r, d)
			if err != nil {
				t.Fatalf("Compile(%s) of a resolved query: %v", d, err)
			}
			if strings.Count(sql, "'")%2 != 0 {
				t.Fatalf("unbalanced quotes in %s", sql)
			}
		}
	})
}
