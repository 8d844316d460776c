package engine

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/millrace/millrace/internal/playbook"
)

// A loop's result is the list people already use, and also NoETL's
// {results, stats}.
func TestLoopResultReadsAsResultsAndStats(t *testing.T) {
	t.Parallel()
	var results []any
	_ = json.Unmarshal([]byte(`[{"n": 1}, {"status": "error", "error": "boom", "data": null}, {"n": 3}]`), &results)
	s := Scope{Results: map[string]any{"fetch": results}}
	for tmpl, want := range map[string]any{
		"{{ fetch | length }}":                                     3,
		"{{ fetch[0].n }}":                                         1,
		"{{ fetch.data[2].n }}":                                    3,
		"{{ fetch.results | length }}":                             3,
		"{{ fetch.results[2].n }}":                                 3,
		"{{ fetch.stats.total }}":                                  3,
		"{{ fetch.stats.success }}":                                2,
		"{{ fetch.stats.failed }}":                                 1,
		"{{ fetch.stats }}":                                        map[string]any{"total": 3, "success": 2, "failed": 1},
		"{% for r in fetch %}{{ r.n | default('-') }}{% endfor %}": "1-3",
	} {
		got, err := Render(tmpl, s)
		if err != nil {
			t.Errorf("%s: %v", tmpl, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", tmpl, got, want)
		}
	}
	// Rendered whole it stays the list.
	got, err := Render("{{ fetch }}", s)
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := got.([]any); !ok || len(l) != 3 {
		t.Errorf("{{ fetch }} = %#v, want the list", got)
	}
	// A step's own `set` reads result.stats too.
	set, err := StepSet(&playbook.Step{Name: "fetch", Set: map[string]any{"ok": "{{ result.stats.success }}/{{ result.results | length }}"}}, Scope{}, results)
	if err != nil {
		t.Fatal(err)
	}
	if set["ok"] != "2/3" {
		t.Errorf("step set ok = %#v, want 2/3", set["ok"])
	}
}

// iter.* targets go to the run's iter scope, others to the context; the
// scope it came from is left alone.
func TestScopeAssign(t *testing.T) {
	t.Parallel()
	s := Scope{Context: map[string]any{"a": 1}, Extra: map[string]any{"iter": map[string]any{"item": "x", "index": 0}}}
	got := s.Assign(map[string]any{"ctx.b": 2, "c": 3, "iter.page": 1, "iter.deep.y": true})
	if want := map[string]any{"a": 1, "b": 2, "c": 3}; !reflect.DeepEqual(got.Context, want) {
		t.Errorf("context %v, want %v", got.Context, want)
	}
	if want := map[string]any{"item": "x", "index": 0, "page": 1, "deep": map[string]any{"y": true}}; !reflect.DeepEqual(got.Extra["iter"], want) {
		t.Errorf("iter %v, want %v", got.Extra["iter"], want)
	}
	if len(s.Context) != 1 || len(s.Extra["iter"].(map[string]any)) != 2 {
		t.Errorf("Assign modified its receiver: %v %v", s.Context, s.Extra)
	}
	v, err := Render("{{ iter.page }}-{{ iter.item }}-{{ b }}", got)
	if err != nil || v != "1-x-2" {
		t.Errorf("render = %v, %v; want 1-x-2", v, err)
	}
}

// break and jump carry their action (and jump its target) out of Decide;
// all three of continue, break and jump let the run go on.
func TestDecideBreakAndJump(t *testing.T) {
	t.Parallel()
	p := &playbook.Policy{Field: "tool[a].spec.policy", Rules: []playbook.Rule{
		{When: "{{ output.data.more }}", Do: playbook.DoJump, To: "fetch", Set: map[string]any{"iter.page": "{{ output.data.page + 1 }}"}},
		{Else: true, Do: playbook.DoBreak},
	}}
	d, err := Decide(p, Scope{}, Outcome{Status: StatusCompleted, Result: map[string]any{"more": true, "page": 1}, Attempt: 1})
	if err != nil || d.Do != playbook.DoJump || d.To != "fetch" || d.Set["iter.page"] != 2 || !d.Continues() {
		t.Errorf("decision %+v, %v; want a jump to fetch setting iter.page 2", d, err)
	}
	d, err = Decide(p, Scope{}, Outcome{Status: StatusFailed, Error: "boom", Attempt: 1})
	if err != nil || d.Do != playbook.DoBreak || !d.Continues() {
		t.Errorf("decision %+v, %v; want break", d, err)
	}
	if (Decision{Do: playbook.DoRetry}).Continues() || (Decision{Do: playbook.DoFail}).Continues() {
		t.Error("retry and fail must not continue")
	}
}

// A failed HTTP outcome carries NoETL's error.kind and error.code, which
// NoETL's pagination fixtures match on.
func TestOutputErrorKindOfHTTPStatus(t *testing.T) {
	t.Parallel()
	for status, kind := range map[int]string{429: "rate_limit", 401: "auth", 403: "auth", 404: "not_found", 422: "client_error", 503: "server_error"} {
		out := OutputOf(Outcome{Status: StatusFailed, Error: "boom", Result: map[string]any{"status": float64(status)}, Attempt: 1})
		e := out["error"].(map[string]any)
		if e["kind"] != kind || e["code"] != fmt.Sprintf("HTTP_%d", status) {
			t.Errorf("status %d: error %v; want kind %s", status, e, kind)
		}
	}
	out := OutputOf(Outcome{Status: StatusCompleted, Result: map[string]any{"status": 200}})
	if out["error"] != nil {
		t.Errorf("success has error %v", out["error"])
	}
}
