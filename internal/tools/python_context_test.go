package tools

import (
	"encoding/json"
	"testing"
)

// NoETL's python tool binds `context` (the step's template variables): its
// vars_test fixtures print context.keys(), others read a step result as
// context["step"] or a workload key as context.get("key"). A main(context)
// parameter takes it too; an input key named context wins, as input keys
// win over every preloaded global.
func TestPythonContextGlobal(t *testing.T) {
	t.Parallel()
	pyctx := map[string]any{"workload": map[string]any{"user_id": "u1"}, "user_id": "u1", "start": map[string]any{"n": 3.0}}
	for _, tc := range []struct {
		name string
		cfg  map[string]any
		want any
	}{
		{"global", pythonCfg(`result = {"keys": sorted(context.keys()), "n": context["start"]["n"], "user": context.get("user_id")}`, PythonContextKey, pyctx),
			map[string]any{"keys": []any{"start", "user_id", "workload"}, "n": 3.0, "user": "u1"}},
		{"main parameter", pythonCfg("def main(x, context):\n    return [x, context['start']['n']]\n", "input", map[string]any{"x": 1.0}, PythonContextKey, pyctx),
			[]any{1.0, 3.0}},
		{"unbound is empty", pythonCfg(`result = dict(context)`), map[string]any{}},
		{"input wins", pythonCfg(`result = context`, "input", map[string]any{"context": "mine"}, PythonContextKey, pyctx), "mine"},
	} {
		got, _ := json.Marshal(pythonRun(t, tc.cfg))
		if want, _ := json.Marshal(tc.want); string(got) != string(want) {
			t.Errorf("%s: result = %s, want %s", tc.name, got, want)
		}
	}
	if e := runErr(t, t.Context(), pythonCfg("result = 1", PythonContextKey, "not a mapping")); e.Kind != ErrorKindConfig {
		t.Errorf("context not a mapping: %+v", e)
	}
}

// A loop result passed whole (the engine's PythonLoopKey mark) is NoETL's
// {results, stats} dict to the code — the batch_execution fixtures'
// `x.get("stats", {}) if isinstance(x, dict) else {}` — and still reads as
// the list: len, iteration, indexing.
func TestPythonLoopResultInput(t *testing.T) {
	t.Parallel()
	mark := map[string]any{PythonLoopKey: map[string]any{
		"results": []any{map[string]any{"n": 1.0}, map[string]any{"n": 2.0}},
		"stats":   map[string]any{"total": 2.0, "success": 2.0, "failed": 0.0}}}
	code := `stats = worker_loop.get("stats", {}) if isinstance(worker_loop, dict) else {}
result = {
    "total": stats.get("total"),
    "results": len(worker_loop.get("results", [])),
    "len": len(worker_loop),
    "ns": [r["n"] for r in worker_loop],
    "first": worker_loop[0]["n"],
    "nested": len(input_data["deep"]["l"]),
    "whole": worker_loop,
}`
	got, _ := json.Marshal(pythonRun(t, pythonCfg(code, "input", map[string]any{"worker_loop": mark, "deep": map[string]any{"l": mark}})))
	const want = `{"first":1,"len":2,"nested":2,"ns":[1,2],"results":2,"total":2,"whole":{"results":[{"n":1},{"n":2}],"stats":{"failed":0,"success":2,"total":2}}}`
	if string(got) != want {
		t.Errorf("result = %s, want %s", got, want)
	}
}
