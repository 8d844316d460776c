package engine

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/millrace/millrace/internal/playbook"
)

// httpFixture is an http tool's result as it is stored: Millrace's
// {status, status_code, headers, body}, decoded from JSON.
func httpFixture(t *testing.T, body string) map[string]any {
	t.Helper()
	var res map[string]any
	raw := `{"status": 200, "status_code": 200, "headers": {"content-type": "application/json"}, "body": ` + body + `}`
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// An http result reads as Millrace's {status, headers, body} and as
// NoETL's {status_code, headers, data}, at a later step and as a rule's
// output.data.
func TestHTTPResultReadsAsNoETLShape(t *testing.T) {
	t.Parallel()
	res := httpFixture(t, `{"meta": {"page": 2, "totalPages": 3}, "entry": [1, 2], "data": {"rows": [{"id": 7}]}}`)
	flat := httpFixture(t, `{"rows": [{"id": 8}], "status": "ok"}`)
	text := httpFixture(t, `"plain text"`)
	s := Scope{Results: map[string]any{"fetch": res, "flat": flat, "text": text}}
	for tmpl, want := range map[string]any{
		// Millrace's shape, unchanged.
		"{{ fetch.status }}":                  200,
		"{{ fetch.body.meta.page }}":          2,
		"{{ fetch.headers['content-type'] }}": "application/json",
		// NoETL's: status_code, and data is the body.
		"{{ fetch.status_code }}":                                    200,
		"{{ fetch.data.meta.totalPages }}":                           3,
		"{{ fetch.data.data.rows[0].id }}":                           7,
		"{{ fetch.data.entry | length }}":                            2,
		"{{ flat.data.rows[0].id }}":                                 8,
		"{{ flat.data.data.rows[0].id }}":                            8, // a body without data reads .data as itself
		"{{ flat.data.status }}":                                     "ok",
		"{{ flat.status }}":                                          200, // the result's own keys come first
		"{{ text.data }}":                                            "plain text",
		"{{ fetch.data is defined and fetch.data.data is defined }}": true,
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
	// Rendered whole, the result is Millrace's plain mapping and its data
	// NoETL's body.
	whole, err := Render("{{ fetch }}", s)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := whole.(map[string]any); !ok || m["status_code"] != 200 || m["body"] == nil {
		t.Errorf("{{ fetch }} = %#v", whole)
	}
	data, err := Render("{{ flat.data }}", s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(data, map[string]any{"rows": []any{map[string]any{"id": 8}}, "status": "ok"}) {
		t.Errorf("{{ flat.data }} = %#v, want the body", data)
	}

	// A task's policy reads output.data as NoETL's fixtures do
	// (pagination/fetch_load_test: output.data.meta; pft_flow_test:
	// output.data.data.rows, the tool result's data, i.e. the body's rows)
	// and as Millrace's docs do (output.data.body).
	rule := &playbook.Policy{Step: "s", Field: "tool.spec.policy", Rules: []playbook.Rule{{Else: true, Do: playbook.DoContinue, Set: map[string]any{
		"iter.has_more": "{{ output.data.meta.page < output.data.meta.totalPages }}",
		"iter.records":  "{{ output.data.entry | length }}",
		"iter.rows":     "{{ output.data.data.rows }}",
		"iter.millrace": "{{ output.data.body.meta.page }}",
		"iter.http":     "{{ output.http.status }}",
		"iter.code":     "{{ output.data.status_code }}",
	}}}}
	page := httpFixture(t, `{"meta": {"page": 2, "totalPages": 3}, "entry": [1, 2], "rows": [{"id": 7}]}`)
	d, err := Decide(rule, Scope{}, Outcome{Status: StatusCompleted, Result: page, Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"iter.has_more": true, "iter.records": 2, "iter.rows": []any{map[string]any{"id": 7}},
		"iter.millrace": 2, "iter.http": 200, "iter.code": 200}
	if !reflect.DeepEqual(d.Set, want) {
		t.Errorf("set = %#v, want %#v", d.Set, want)
	}
}

// Only the http tool's exact result shape is read as one: a python result
// with a body key keeps resultMap's reading.
func TestHTTPResultShapeIsExact(t *testing.T) {
	t.Parallel()
	for _, m := range []map[string]any{
		{"body": map[string]any{"x": 1}, "status": 200},
		{"body": 1, "status": 200, "status_code": "200", "headers": map[string]any{}},
		{"body": 1, "status": 200, "status_code": 200, "headers": map[string]any{}, "extra": 1},
	} {
		if isHTTPResult(m) {
			t.Errorf("%v read as an http result", m)
		}
	}
	got, err := Render("{{ p.data.body.x }}", Scope{Results: map[string]any{"p": map[string]any{"body": map[string]any{"x": 1}, "status": 200}}})
	if err != nil || got != 1 {
		t.Errorf("python result with a body: %#v, %v", got, err)
	}
}

// A python tool whose code names `context` gets NoETL's context global: the
// template variables, never keychain. Code that does not name it carries
// nothing extra.
func TestPythonContextBound(t *testing.T) {
	t.Parallel()
	s := Scope{ExecutionID: 9, Workload: map[string]any{"user_id": "u1"}, Results: map[string]any{"start": map[string]any{"n": 3.0}},
		Context: map[string]any{"counter": 42.0}}
	step := &playbook.Step{Name: "p", Tool: map[string]any{"kind": "python", "code": "print(list(context.keys()))"}}
	cfg, err := RenderTool(step, s)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := cfg["context"].(map[string]any)
	for _, k := range []string{"user_id", "workload", "start", "ctx", "execution_id", "counter"} {
		if _, ok := got[k]; !ok {
			t.Errorf("context has no %s: %v", k, got)
		}
	}
	step.Tool["code"] = "result = my_context + contextual"
	if cfg, _ := RenderTool(step, s); cfg["context"] != nil {
		t.Errorf("bound for code that does not name context: %v", cfg["context"])
	}
	// At the worker: keychain stays out, and a context already in the
	// config is replaced, not rendered (it is data).
	task := map[string]any{"kind": "python", "code": "x = context", "context": map[string]any{"evil": "{{ keychain.db.password }}"}}
	v, err := RenderAtWorker(task, s, map[string]any{"db": map[string]any{"password": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	wctx := v.(map[string]any)["context"].(map[string]any)
	if _, ok := wctx["keychain"]; ok {
		t.Errorf("keychain reached context: %v", wctx)
	}
	if _, ok := wctx["evil"]; ok {
		t.Errorf("a context in the config was kept: %v", wctx)
	}
	if task["context"] == nil {
		t.Errorf("RenderAtWorker modified its argument")
	}
	if other, _ := RenderTool(&playbook.Step{Name: "h", Tool: map[string]any{"kind": "shell", "code": "context"}}, s); other["context"] != nil {
		t.Errorf("bound for a shell tool")
	}
}

// A loop's result passed whole in a python tool's input keeps its identity
// on the wire ({tools.PythonLoopKey: {results, stats}}), so the code can
// read it as NoETL's loop result; anywhere else it is the list.
func TestLoopResultMarkedForPythonInput(t *testing.T) {
	t.Parallel()
	var each []any
	_ = json.Unmarshal([]byte(`[{"n": 1}, {"status": "error", "error": "boom", "data": null}]`), &each)
	s := Scope{Results: map[string]any{"each": each}}
	want := map[string]any{"__millrace_loop__": map[string]any{
		"results": []any{map[string]any{"n": 1}, map[string]any{"status": "error", "error": "boom", "data": nil}},
		"stats":   map[string]any{"total": 2, "success": 1, "failed": 1}}}
	py := map[string]any{"kind": "python", "code": "result = 1",
		"input": map[string]any{"whole": "{{ each }}", "defaulted": "{{ each | default({}) }}", "n": "{{ each | length }}", "nested": map[string]any{"l": "{{ each }}"}}}
	cfg, err := RenderTool(&playbook.Step{Name: "p", Tool: py}, s)
	if err != nil {
		t.Fatal(err)
	}
	in := cfg["input"].(map[string]any)
	if !reflect.DeepEqual(in["whole"], want) || !reflect.DeepEqual(in["defaulted"], want) || !reflect.DeepEqual(in["nested"], map[string]any{"l": want}) || in["n"] != 2 {
		t.Errorf("python input = %#v", in)
	}
	v, err := RenderAtWorker(py, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.(map[string]any)["input"].(map[string]any)["whole"]; !reflect.DeepEqual(got, want) {
		t.Errorf("python input at the worker = %#v", got)
	}
	// Other tools, and python fields other than input, get the list.
	for _, tool := range []map[string]any{
		{"kind": "http", "url": "http://x", "body": map[string]any{"whole": "{{ each }}"}},
		{"kind": "python", "code": "result = 1", "env": map[string]any{"whole": "{{ each }}"}},
	} {
		cfg, err := RenderTool(&playbook.Step{Name: "h", Tool: tool}, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"body", "env"} {
			if m, ok := cfg[k].(map[string]any); ok {
				if _, isList := m["whole"].([]any); !isList {
					t.Errorf("%s %s.whole = %#v, want the list", tool["kind"], k, m["whole"])
				}
			}
		}
	}
}

// A SQL result also answers NoETL's per-statement command_<i>, in templates
// and, passed whole in a python tool's input, as real keys (NoETL's
// fixtures call db_result.get("command_0", {}).get("rows", [])).
func TestSQLResultReadsAsCommands(t *testing.T) {
	t.Parallel()
	var one, two map[string]any
	_ = json.Unmarshal([]byte(`{"columns": ["a"], "rows": [{"a": 1}], "row_count": 1, "rows_affected": 0}`), &one)
	_ = json.Unmarshal([]byte(`{"columns": ["b"], "rows": [{"b": 2}], "row_count": 1, "rows_affected": 3, "statements": [
		{"columns": ["a"], "rows": [{"a": 1}], "row_count": 1, "rows_affected": 0},
		{"columns": [], "rows": [], "row_count": 0, "rows_affected": 3},
		{"columns": ["b"], "rows": [{"b": 2}], "row_count": 1, "rows_affected": 0}]}`), &two)
	s := Scope{Results: map[string]any{"one": one, "two": two}}
	for tmpl, want := range map[string]any{
		"{{ one.rows[0].a }}":               1,
		"{{ one.command_0.rows[0].a }}":     1,
		"{{ one.command_1 is defined }}":    false,
		"{{ two.rows[0].b }}":               2,
		"{{ two.command_0.rows[0].a }}":     1,
		"{{ two.command_1.rows_affected }}": 3,
		"{{ two.command_2.rows[0].b }}":     2,
		"{{ two.data.row_count }}":          1,
		"{{ one.command_x is defined }}":    false,
		"{{ two.statements | length }}":     3,
		"{{ one | tojson }}":                `{"columns":["a"],"row_count":1,"rows":[{"a":1}],"rows_affected":0}`,
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
	py := map[string]any{"kind": "python", "code": "result = 1", "input": map[string]any{"one": "{{ one }}", "two": "{{ two }}"}}
	cfg, err := RenderTool(&playbook.Step{Name: "p", Tool: py}, s)
	if err != nil {
		t.Fatal(err)
	}
	in := cfg["input"].(map[string]any)
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		One map[string]map[string]any
		Two map[string]json.RawMessage
	}
	_ = json.Unmarshal(raw, &got)
	if got.One["command_0"]["row_count"] != 1.0 || len(got.Two) != 8 || string(got.Two["command_1"]) != `{"columns":[],"row_count":0,"rows":[],"rows_affected":3}` {
		t.Errorf("python input = %s", raw)
	}
}

// NoETL's pagination pipelines keep `{{ output }}` and read its data in
// python as the body (http_response.get('data', {}).get('data', [])), and
// pass an http step whole to python (response.get('data')); pft_flow_test
// reads output.data.data.rows from a body {data: {rows}}.
func TestHTTPDataIsTheBodyWhenRenderedWhole(t *testing.T) {
	t.Parallel()
	res := httpFixture(t, `{"data": {"rows": [1, 2]}, "paging": {"next": 2}}`)
	s := Scope{Results: map[string]any{"fetch": res}}.With("output", OutputOf(Outcome{Status: StatusCompleted, Result: res}))
	out, err := Render("{{ output }}", s)
	if err != nil {
		t.Fatal(err)
	}
	data := out.(map[string]any)["data"].(map[string]any)
	body := normalizedAny(res["body"]).(map[string]any)
	if !reflect.DeepEqual(data["data"], body["data"]) || !reflect.DeepEqual(data["paging"], body["paging"]) ||
		data["status_code"] != 200 || !reflect.DeepEqual(data["body"], body) {
		t.Errorf("{{ output }}.data = %#v, want the body's keys and the result's", data)
	}
	for tmpl, want := range map[string]any{
		"{{ output.data.data.rows | length }}": 2, // from the body's own data
		"{{ output.data.paging.next }}":        2,
		"{{ output.data.status }}":             200,
		"{{ fetch.data.data.rows[1] }}":        2,
	} {
		if got, err := Render(tmpl, s); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, %v; want %#v", tmpl, got, err, want)
		}
	}
	cfg, err := RenderTool(&playbook.Step{Name: "p", Tool: map[string]any{"kind": "python", "code": "result = 1", "input": map[string]any{"response": "{{ fetch }}"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	if in := cfg["input"].(map[string]any)["response"].(map[string]any); !reflect.DeepEqual(in["data"], normalizedAny(res["body"])) || in["body"] == nil {
		t.Errorf("python input response = %#v, want the result with data = the body", in)
	}
}
