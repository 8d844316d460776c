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
