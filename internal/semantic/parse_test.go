package semantic

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const exampleDoc = `models:
  - name: orders
    description: One row per order.
    table: analytics.orders
    dimensions:
      - {name: status, type: string}
      - {name: country, type: string, sql: upper(country_code)}
      - {name: is_paid, type: boolean, sql: paid_at IS NOT NULL}
      - {name: amount, type: number}
      - {name: created_at, type: timestamp}
      - {name: order_date, type: date, sql: created_at}
    metrics:
      - {name: orders, type: count}
      - {name: customers, type: count_distinct, sql: customer_id}
      - {name: revenue, type: sum, sql: amount}
      - {name: avg_order, type: average, sql: amount}
      - {name: median_order, type: median, sql: amount}
      - {name: p95_order, type: percentile, sql: amount, percentile: 95}
    pre_aggregates:
      - name: daily_by_status
        dimensions: [status, country]
        metrics: [orders, revenue, avg_order]
        time_dimension: created_at
        granularity: day
        filters:
          - {field: status, operator: notEquals, values: [cancelled]}
          - {field: created_at, operator: greaterThanOrEqual, values: [2024-01-01]}
        max_rows: 1000000
        refresh:
          cron: "0 * * * *"
          key_sql: select max(updated_at) from analytics.orders
          partition_by: month
          update_window: 3d
          max_staleness: 6h
`

func TestParseModelsDoc(t *testing.T) {
	t.Parallel()
	ms, err := ParseModelsDoc("models.yaml", []byte(exampleDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("%d models", len(ms))
	}
	m := ms[0]
	if m.Name != "orders" || m.Table != "analytics.orders" || len(m.Dimensions) != 6 || len(m.Metrics) != 6 || m.Pos != (Pos{"models.yaml", 2, 5}) {
		t.Fatalf("model %+v", m)
	}
	if d := m.Dimension("country"); d.SQL != "upper(country_code)" || d.Type != DimString || d.Pos.Line != 7 {
		t.Errorf("country %+v", d)
	}
	if x := m.Metric("p95_order"); x.Percentile != 95 || x.Type != MetricPercentile {
		t.Errorf("p95 %+v", x)
	}
	p := m.PreAggregates[0]
	if p.Name != "daily_by_status" || p.TimeDimension != "created_at" || p.Granularity != GrainDay || p.MaxRows != 1000000 || p.Pos.Line != 20 {
		t.Errorf("pre-aggregate %+v", p)
	}
	if len(p.Filters) != 2 || p.Filters[0].Target.FieldID != "orders_status" || p.Filters[1].Values[0] != "2024-01-01" || p.Filters[1].Pos.Line != 27 {
		t.Errorf("filters %+v", p.Filters)
	}
	r := p.Refresh
	if r.Cron != "0 * * * *" || r.KeyEvery != DefaultKeyEvery || r.PartitionBy != GrainMonth ||
		r.UpdateWindow != Duration(72*time.Hour) || r.MaxStaleness != Duration(6*time.Hour) {
		t.Errorf("refresh %+v", r)
	}
	if _, err := ScopeCond(&m, &p); err != nil {
		t.Error(err)
	}
	// The canonical JSON reads back the same (durations as text).
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"update_window":"72h0m0s"`) {
		t.Errorf("json %s", b)
	}
	var back Model
	if err := json.Unmarshal(b, &back); err != nil || ModelHash(&back) != ModelHash(&m) {
		t.Errorf("round trip: %v", err)
	}

	// The same as JSON: lines still count.
	j, _ := json.MarshalIndent(map[string]any{"models": []any{map[string]any{"name": "t", "table": "t", "dimensions": []any{map[string]any{"name": "a", "type": "nope"}}}}}, "", "\t")
	_, err = ParseModelsDoc("request", j)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != 7 || !strings.Contains(ps[0].Error(), `request:7:14:`) || !strings.Contains(ps[0].Msg, `unknown dimension type "nope"`) {
		t.Errorf("JSON problems: %v", err)
	}
}

func TestParseModelsFromProjectsFile(t *testing.T) {
	t.Parallel()
	src := "projects:\n  - name: shop\n    warehouse: {type: duckdb, url: ':memory:'}\n    models:\n      - name: orders\n        table: orders\n        dimensions: [{name: status, type: strin}]\n"
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	models := doc.Content[0].Content[1].Content[0].Content[5]
	_, err := ParseModels("projects.yaml", models)
	if err == nil || err.Error() != `projects.yaml:7:43: unknown dimension type "strin" (hint: one of string, number, boolean, date, timestamp)` {
		t.Fatalf("err = %v", err)
	}
	ms, err := ParseModels("projects.yaml", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"})
	if err != nil || ms != nil {
		t.Fatalf("no models: %v %v", ms, err)
	}
}

// problemCase is a definition and the problems it must produce: each as
// line and a fragment of the message.
type problemCase struct {
	name string
	src  string
	want []wantProblem
}

type wantProblem struct {
	line int
	msg  string
}

const head = "models:\n  - name: orders\n    table: orders\n    dimensions:\n      - {name: status, type: string}\n      - {name: created_at, type: timestamp}\n      - {name: day, type: date}\n      - {name: amount, type: number}\n    metrics:\n      - {name: revenue, type: sum, sql: amount}\n      - {name: buyers, type: count_distinct, sql: customer_id}\n"

// line 12 is the first line after head.
const preHead = head + "    pre_aggregates:\n      - name: p\n"

func TestParseModelsProblems(t *testing.T) {
	t.Parallel()
	tests := []problemCase{
		{"empty", "", []wantProblem{{1, "empty"}}},
		{"yaml", "models: [\n", []wantProblem{{1, "invalid YAML"}}},
		{"two docs", "models: []\n---\nmodels: []\n", []wantProblem{{2, "more than one YAML document"}}},
		{"not a mapping", "- a\n", []wantProblem{{1, "must be a mapping with models"}}},
		{"no models key", "model: []\n", []wantProblem{{1, `unknown key "model"`}, {1, "missing models"}}},
		{"models not a list", "models: {a: 1}\n", []wantProblem{{1, "models must be a list"}}},
		{"model not a mapping", "models:\n  - orders\n", []wantProblem{{2, "a model must be a mapping"}}},
		{"unknown key", head + "    dimensons: []\n", []wantProblem{{12, `unknown key "dimensons" in a model`}}},
		{"duplicate key", head + "    table: x\n", []wantProblem{{12, `duplicate key "table"`}}},
		{"no name", "models:\n  - table: t\n    metrics: [{name: n, type: count}]\n", []wantProblem{{2, "the model has no name"}}},
		{"bad name", "models:\n  - name: Orders\n    table: t\n    metrics: [{name: n, type: count}]\n", []wantProblem{{2, `"Orders" is not a valid name`}}},
		{"duplicate model", "models:\n  - {name: a, table: t, metrics: [{name: n, type: count}]}\n  - {name: a, table: t, metrics: [{name: n, type: count}]}\n", []wantProblem{{3, `duplicate model "a"`}}},
		{"table and sql", head + "    sql: select 1\n", []wantProblem{{12, "both table and sql"}}},
		{"neither", "models:\n  - name: a\n    metrics: [{name: n, type: count}]\n", []wantProblem{{2, "neither table nor sql"}}},
		{"bad table", "models:\n  - name: a\n    table: orders; drop table x\n    metrics: [{name: n, type: count}]\n", []wantProblem{{3, "not a table name"}}},
		{"no fields", "models:\n  - name: a\n    table: t\n", []wantProblem{{2, "no dimensions and no metrics"}}},
		{"dim type", head + "      - {name: n, type: integer}\n", []wantProblem{{12, `unknown metric type "integer"`}}},
		{"dim no type", "models:\n  - name: a\n    table: t\n    dimensions:\n      - name: x\n", []wantProblem{{5, "dimension x has no type"}}},
		{"duplicate field", head + "      - {name: status, type: count}\n", []wantProblem{{12, `duplicate field "status"`}}},
		{"field id clash", "models:\n  - name: a\n    table: t\n    dimensions:\n      - {name: t, type: timestamp}\n      - {name: t_day, type: date}\n", []wantProblem{{6, "field id a_t_day"}}},
		{"percentile missing", head + "      - {name: p, type: percentile, sql: amount}\n", []wantProblem{{12, "has no percentile"}}},
		{"percentile range", head + "      - {name: p, type: percentile, percentile: 100}\n", []wantProblem{{12, "outside 0 < p < 100"}}},
		{"percentile text", head + "      - {name: p, type: percentile, percentile: '90'}\n", []wantProblem{{12, "must be a number"}}},
		{"percentile on sum", head + "      - {name: p, type: sum, percentile: 90}\n", []wantProblem{{12, "has a percentile"}}},
		{"metric type hint", head + "      - {name: p, type: avg}\n", []wantProblem{{12, `unknown metric type "avg"`}}},
		{"missing dimension", preHead + "        dimensions: [status, region]\n        metrics: [revenue]\n",
			[]wantProblem{{14, `references dimension "region", which model orders does not have`}}},
		{"missing metric", preHead + "        metrics:\n          - revenue\n          - revenu\n",
			[]wantProblem{{16, `references metric "revenu"`}}},
		{"listed twice", preHead + "        metrics: [revenue, revenue]\n", []wantProblem{{14, "twice"}}},
		{"time dim missing", preHead + "        metrics: [revenue]\n        time_dimension: updated_at\n        granularity: day\n",
			[]wantProblem{{15, `time dimension "updated_at"`}}},
		{"time dim type", preHead + "        metrics: [revenue]\n        time_dimension: status\n        granularity: day\n",
			[]wantProblem{{15, "time dimension status is a string"}}},
		{"time dim twice", preHead + "        dimensions: [created_at]\n        metrics: [revenue]\n        time_dimension: created_at\n        granularity: day\n",
			[]wantProblem{{16, "both as time_dimension and in dimensions"}}},
		{"no granularity", preHead + "        metrics: [revenue]\n        time_dimension: created_at\n", []wantProblem{{15, "no granularity"}}},
		{"no time dim", preHead + "        metrics: [revenue]\n        granularity: day\n", []wantProblem{{15, "no time_dimension"}}},
		{"bad grain", preHead + "        metrics: [revenue]\n        time_dimension: created_at\n        granularity: minute\n", []wantProblem{{16, `unknown granularity "minute"`}}},
		{"hour of date", preHead + "        metrics: [revenue]\n        time_dimension: day\n        granularity: hour\n", []wantProblem{{16, "does not apply to date dimension day"}}},
		{"no fields", preHead + "        dimensions: []\n", []wantProblem{{13, "holds no fields"}}},
		{"duplicate pre-aggregate", preHead + "        metrics: [revenue]\n      - {name: p, metrics: [revenue]}\n", []wantProblem{{15, `duplicate pre-aggregate "p"`}}},
		{"filter field", preHead + "        metrics: [revenue]\n        filters:\n          - {field: revenue, operator: greaterThan, values: [1]}\n",
			[]wantProblem{{16, `references "revenue", which is not a dimension`}}},
		{"filter operator", preHead + "        metrics: [revenue]\n        filters:\n          - {field: status, operator: greaterThan, values: [a]}\n",
			[]wantProblem{{16, "operator greaterThan does not apply to a string"}}},
		{"filter value type", preHead + "        metrics: [revenue]\n        filters:\n          - {field: amount, operator: equals, values: [abc]}\n",
			[]wantProblem{{16, `value "abc" is not a number`}}},
		{"filter date", preHead + "        metrics: [revenue]\n        filters:\n          - field: created_at\n            operator: greaterThan\n            values: [2024-02-30]\n",
			[]wantProblem{{18, "not a date"}}},
		{"filter no operator", preHead + "        metrics: [revenue]\n        filters:\n          - {field: status}\n", []wantProblem{{16, "has no operator"}}},
		{"filter unknown key", preHead + "        metrics: [revenue]\n        filters:\n          - {field: status, op: isNull}\n",
			[]wantProblem{{16, "has no operator"}, {16, `unknown key "op"`}}},
		{"max_rows", preHead + "        metrics: [revenue]\n        max_rows: -5\n", []wantProblem{{15, "max_rows -5"}}},
		{"cron", preHead + "        metrics: [revenue]\n        refresh: {cron: '61 * * * *'}\n", []wantProblem{{15, `refresh.cron "61 * * * *"`}}},
		{"cron never", preHead + "        metrics: [revenue]\n        refresh:\n          cron: '0 0 30 2 *'\n", []wantProblem{{16, "never fires"}}},
		{"cron tz", preHead + "        metrics: [revenue]\n        refresh: {cron: 'TZ=Europe/Paris 0 * * * *'}\n", []wantProblem{{15, "UTC"}}},
		{"duration", preHead + "        metrics: [revenue]\n        refresh: {max_staleness: 3 days}\n", []wantProblem{{15, `"3 days" is not a duration`}}},
		{"negative duration", preHead + "        metrics: [revenue]\n        refresh: {max_staleness: -1h}\n", []wantProblem{{15, "not a positive duration"}}},
		{"key_every alone", preHead + "        metrics: [revenue]\n        refresh:\n          key_every: 5m\n", []wantProblem{{16, "key_every without key_sql"}}},
		{"partition needs time", preHead + "        metrics: [revenue]\n        refresh:\n          partition_by: day\n", []wantProblem{{16, "partition_by needs a time_dimension"}}},
		{"partition grain", preHead + "        metrics: [revenue]\n        time_dimension: created_at\n        granularity: week\n        refresh:\n          partition_by: month\n",
			[]wantProblem{{18, "partition_by month cannot be derived from granularity week"}}},
		{"partition kind", preHead + "        metrics: [revenue]\n        time_dimension: created_at\n        granularity: day\n        refresh: {partition_by: year}\n",
			[]wantProblem{{17, "not day or month"}}},
		{"window alone", preHead + "        metrics: [revenue]\n        refresh:\n          update_window: 3d\n", []wantProblem{{16, "update_window without partition_by"}}},
		{"refresh key", preHead + "        metrics: [revenue]\n        refresh: {every: 1h}\n", []wantProblem{{15, `unknown key "every" in refresh`}}},
		{"pos is output", head + "    pos: {line: 1}\n", []wantProblem{{12, `unknown key "pos"`}}},
		{"several at once", "models:\n  - name: a\n    table: t\n    dimensions:\n      - {name: x, type: text}\n    metrics:\n      - {name: y, type: total}\n",
			[]wantProblem{{5, "dimension type"}, {7, "metric type"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, tt.src, tt.want)
		})
	}
}

func checkProblems(t *testing.T, src string, want []wantProblem) {
	t.Helper()
	ms, err := ParseModelsDoc("m.yaml", []byte(src))
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("ParseModelsDoc = %+v, %v; want Problems", ms, err)
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for i, w := range want {
		if ps[i].Line != w.line || !strings.Contains(ps[i].Msg, w.msg) || ps[i].File != "m.yaml" {
			t.Errorf("problem %d = %q (line %d), want line %d containing %q", i, ps[i].Error(), ps[i].Line, w.line, w.msg)
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "6h": 6 * time.Hour, "3d": 72 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || time.Duration(got) != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0s", "-1d", "1.5d", "3 d", "d", "1y"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`60000000000`), &d); err != nil || d != Duration(time.Minute) {
		t.Errorf("ns: %v %v", d, err)
	}
}

func FuzzParseModelsDoc(f *testing.F) {
	f.Add([]byte(exampleDoc))
	f.Add([]byte(`{"models":[{"name":"a","sql":"select 1 as x","dimensions":[{"name":"x","type":"number"}],"metrics":[{"name":"n","type":"count"}],"pre_aggregates":[{"name":"p","dimensions":["x"],"metrics":["n"],"filters":[{"field":"x","operator":"inBetween","values":[1,2]}]}]}]}`))
	f.Add([]byte("models:\n  - &m {name: a, table: t, metrics: [{name: n, type: count}]}\n  - *m\n"))
	f.Add([]byte(preHead + "        metrics: [revenue]\n        time_dimension: created_at\n        granularity: day\n        refresh: {partition_by: day, update_window: 2d, key_sql: x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseModelsDoc("f.yaml", data)
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 || ms != nil {
				t.Fatalf("error %v is not Problems", err)
			}
			for _, p := range ps {
				if p.File != "f.yaml" || p.Msg == "" {
					t.Fatalf("problem %+v", p)
				}
			}
			return
		}
		for i := range ms {
			m := &ms[i]
			if !nameRE.MatchString(m.Name) || (m.Table == "") == (m.SQL == "") {
				t.Fatalf("accepted model %+v", m)
			}
			_ = ModelHash(m)
			for j := range m.PreAggregates {
				p := &m.PreAggregates[j]
				_ = PreAggHash(m, p)
				if _, err := ScopeCond(m, p); err != nil {
					t.Fatalf("accepted pre-aggregate %s has bad filters: %v", p.Name, err)
				}
			}
			// Every field is queryable and compiles.
			q := MetricQuery{ExploreName: m.Name}
			for _, d := range m.Dimensions {
				q.Dimensions = append(q.Dimensions, FieldID(m.Name, d.Name, ""))
			}
			for _, x := range m.Metrics {
				q.Metrics = append(q.Metrics, FieldID(m.Name, x.Name, ""))
			}
			r, err := Resolve(m, q)
			if err != nil {
				t.Fatalf("accepted model %s: %v", m.Name, err)
			}
			if _, err := Compile(r, DuckDB); err != nil {
				t.Fatal(err)
			}
		}
	})
}
