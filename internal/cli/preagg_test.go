package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

func TestParseFilter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want semantic.FilterRule
	}{
		{"orders_status equals shipped", semantic.FilterRule{Target: semantic.FilterTarget{FieldID: "orders_status"}, Operator: semantic.OpEquals, Values: []any{"shipped"}}},
		{"orders_status = shipped, returned", semantic.FilterRule{Target: semantic.FilterTarget{FieldID: "orders_status"}, Operator: semantic.OpEquals, Values: []any{"shipped", "returned"}}},
		{"amount >= 10", semantic.FilterRule{Target: semantic.FilterTarget{FieldID: "amount"}, Operator: semantic.OpGreaterThanOrEqual, Values: []any{"10"}}},
		{"created_at inbetween 2024-01-01,2024-02-01", semantic.FilterRule{Target: semantic.FilterTarget{FieldID: "created_at"}, Operator: semantic.OpInBetween, Values: []any{"2024-01-01", "2024-02-01"}}},
		{"note isNull", semantic.FilterRule{Target: semantic.FilterTarget{FieldID: "note"}, Operator: semantic.OpIsNull}},
		{"name startsWith New York", semantic.FilterRule{Target: semantic.FilterTarget{FieldID: "name"}, Operator: semantic.OpStartsWith, Values: []any{"New York"}}},
	} {
		got, err := parseFilter(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseFilter(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for in, want := range map[string]string{
		"orders_status":          "want 'FIELD OP VALUE'",
		"orders_status like x":   `unknown operator "like"`,
		"orders_status equals":   "equals needs a value",
		"note notNull something": "notNull takes no value",
	} {
		if _, err := parseFilter(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseFilter(%q) err = %v, want %q", in, err, want)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"a equals b", "a >= 1", "x isNull", "a inBetween 1,2", "", " , ", "a = ,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseFilter(s)
		if err != nil {
			return
		}
		if r.Target.FieldID == "" || strings.ContainsAny(r.Target.FieldID, " \t\n") {
			t.Fatalf("parseFilter(%q) accepted field %q", s, r.Target.FieldID)
		}
		if (r.Operator == semantic.OpIsNull || r.Operator == semantic.OpNotNull) != (len(r.Values) == 0) {
			t.Fatalf("parseFilter(%q): operator %s with %d values", s, r.Operator, len(r.Values))
		}
	})
}

// metricRequest parses the query command's flags and builds the request.
func metricRequest(t *testing.T, stdin string, args ...string) (api.MetricQuerySubmit, error) {
	t.Helper()
	var mf metricFlags
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	mf.bind(cmd)
	cmd.SetIn(strings.NewReader(stdin))
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return mf.request(cmd)
}

func TestMetricRequestFromFlags(t *testing.T) {
	t.Parallel()
	in, err := metricRequest(t, "", "--explore", "orders", "--dimensions", "orders_status,orders_created_at_month",
		"--metrics", "orders_revenue", "--filter", "orders_status != cancelled", "--filter", "orders_revenue > 100",
		"--sort", "orders_created_at_month", "--sort", "orders_revenue:desc", "--limit", "20", "--no-pre-aggregates")
	if err != nil {
		t.Fatal(err)
	}
	q := in.Query
	if q.ExploreName != "orders" || len(q.Dimensions) != 2 || q.Metrics[0] != "orders_revenue" || q.Limit != 20 {
		t.Fatalf("query = %+v", q)
	}
	if len(q.Sorts) != 2 || q.Sorts[0].Descending || !q.Sorts[1].Descending {
		t.Fatalf("sorts = %+v", q.Sorts)
	}
	// The filter on a dimension is a WHERE, the one on a metric a HAVING.
	if d := q.Filters.Dimensions; d == nil || len(d.And) != 1 || d.And[0].Target.FieldID != "orders_status" || d.And[0].Operator != semantic.OpNotEquals {
		t.Fatalf("dimension filters = %+v", d)
	}
	if m := q.Filters.Metrics; m == nil || len(m.And) != 1 || m.And[0].Target.FieldID != "orders_revenue" {
		t.Fatalf("metric filters = %+v", m)
	}
	if in.UsePreAggregates == nil || *in.UsePreAggregates {
		t.Fatal("--no-pre-aggregates did not set usePreAggregates: false")
	}
	if _, err := metricRequest(t, "", "--dimensions", "a"); err == nil || !strings.Contains(err.Error(), "--explore") {
		t.Fatalf("no explore: err = %v", err)
	}
	if _, err := metricRequest(t, "", "--explore", "orders"); err == nil || !strings.Contains(err.Error(), "--dimensions or --metrics") {
		t.Fatalf("no fields: err = %v", err)
	}
	if _, err := metricRequest(t, "", "--explore", "o", "--metrics", "m", "--sort", "m:up"); err == nil {
		t.Fatal("--sort m:up accepted")
	}
}

func TestMetricRequestFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	full := filepath.Join(dir, "full.json")
	if err := os.WriteFile(full, []byte(`{"query": {"exploreName": "orders", "dimensions": ["orders_status"], "metrics": ["orders_count"], "limit": 7}, "context": "background", "invalidateCache": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := metricRequest(t, "", "--file", full, "--limit", "9")
	if err != nil {
		t.Fatal(err)
	}
	if in.Query.ExploreName != "orders" || in.Context != "background" || !in.InvalidateCache || in.Query.Limit != 9 {
		t.Fatalf("from the full form = %+v (want the flag's limit 9 over the file's 7)", in)
	}
	// A bare query on standard input.
	in, err = metricRequest(t, `{"exploreName": "orders", "metrics": ["orders_count"]}`, "--file", "-")
	if err != nil || in.Query.ExploreName != "orders" || in.Query.Metrics[0] != "orders_count" {
		t.Fatalf("bare query = %+v, %v", in, err)
	}
	// Unknown keys are refused, not dropped: a typo must not change the query.
	if _, err := metricRequest(t, `{"exploreName": "orders", "metric": ["orders_count"]}`, "--file", "-"); err == nil || !strings.Contains(err.Error(), `unknown field "metric"`) {
		t.Fatalf("typo: err = %v", err)
	}
}

func TestPreAggLine(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		m    *api.PreAggregateMeta
		want string
	}{
		{&api.PreAggregateMeta{Hit: true, Name: "daily", BuildUUID: "b1", BuiltAt: &at, DataAsOf: &at},
			"pre-aggregate: hit daily (build b1, built 2026-01-02T03:04:05Z, data as of 2026-01-02T03:04:05Z)"},
		{&api.PreAggregateMeta{Name: "daily", Reason: &api.MissReason{Code: api.PreAggMissFieldNotCovered, Message: "orders_note is not in it", PreAggregate: "daily", FieldID: "orders_note"}},
			"pre-aggregate: miss FIELD_NOT_COVERED: orders_note is not in it (closest daily, field orders_note)"},
		{&api.PreAggregateMeta{Reason: &api.MissReason{Code: api.PreAggMissNone, Message: "the model declares none"}},
			"pre-aggregate: miss NO_PRE_AGGREGATES: the model declares none"},
		{nil, "pre-aggregate: not reported by the server"},
	} {
		if got := preAggLine(c.m); got != c.want {
			t.Errorf("preAggLine = %q\nwant          %q", got, c.want)
		}
	}
}

func TestQueryArgs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"query", "--project", "p"}, "give the SQL to run"},
		{[]string{"query", "select 1", "--project", "p", "--explore", "orders"}, "takes no SQL argument"},
		{[]string{"preagg", "refresh", "orders", "--project", "p"}, "MODEL/NAME"},
		{[]string{"preagg", "audit", "--project", "p"}, "one of --file QUERIES.json or --history N"},
		{[]string{"preagg", "list"}, "--project is required"},
	} {
		var out bytes.Buffer
		code := run(t.Context(), append(c.args, "--server", "http://127.0.0.1:1"), &out, &out)
		if code == 0 || !strings.Contains(out.String(), c.want) {
			t.Errorf("%v: exit %d, output %q; want it to say %q", c.args, code, out.String(), c.want)
		}
	}
}
