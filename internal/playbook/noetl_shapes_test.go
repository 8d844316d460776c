package playbook

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The NoETL shapes accepted as written: metadata labels and version, a
// step-level input, tool config under tool.spec, and then keys directly
// under else. Each parses to the same Playbook as its canonical form.

func TestParseNoETLShapes(t *testing.T) {
	t.Parallel()

	// metaHead replaces head's metadata; the workflow starts on line 9.
	const metaHead = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: t
  path: tests/t
  version: 10.0
  labels: {category: example, version: v10, n: 3}
workflow:
`
	wb := "workbook:\n  - name: score\n    tool: {kind: python, input: {x: null, factor: 2}, code: c}\n"
	tests := []struct {
		name  string
		src   string
		check func(t *testing.T, pb *Playbook)
	}{
		{"metadata labels and version", metaHead + "  - step: a\n    tool: {kind: noop}\n", func(t *testing.T, pb *Playbook) {
			if pb.Metadata.Version != "10.0" {
				t.Errorf("version = %q, want the text as written", pb.Metadata.Version)
			}
			if want := map[string]string{"category": "example", "version": "v10", "n": "3"}; !reflect.DeepEqual(pb.Metadata.Labels, want) {
				t.Errorf("labels = %#v, want %#v", pb.Metadata.Labels, want)
			}
		}},
		{"metadata empty labels", strings.Replace(head, "  path: tests/t", "  path: tests/t\n  labels:", 1) + "  - step: a\n    tool: {kind: noop}\n", func(t *testing.T, pb *Playbook) {
			if pb.Metadata.Labels != nil {
				t.Errorf("labels = %#v, want none", pb.Metadata.Labels)
			}
		}},

		{"step input into a tool without input", head + "  - step: a\n    tool: {kind: python, code: c}\n    input: {x: \"{{ start }}\", n: 1}\n", func(t *testing.T, pb *Playbook) {
			want := map[string]any{"kind": "python", "code": "c", "input": map[string]any{"x": "{{ start }}", "n": 1}}
			if got := pb.Steps[0].Tool; !reflect.DeepEqual(got, want) {
				t.Errorf("tool = %#v\nwant %#v", got, want)
			}
		}},
		{"step input merged, the tool's keys winning", head + "  - step: a\n    input: {x: 1, y: 2}\n    tool: {kind: python, code: c, input: {y: 3, z: 4}}\n", func(t *testing.T, pb *Playbook) {
			if got, want := pb.Steps[0].Tool["input"], map[string]any{"x": 1, "y": 3, "z": 4}; !reflect.DeepEqual(got, want) {
				t.Errorf("input = %#v, want %#v", got, want)
			}
		}},
		{"step input null", head + "  - step: a\n    input:\n    tool: {kind: http, url: u}\n", func(t *testing.T, pb *Playbook) {
			if _, ok := pb.Steps[0].Tool["input"]; ok {
				t.Errorf("tool = %#v, want no input", pb.Steps[0].Tool)
			}
		}},
		{"step input into each task that takes input", head + `  - step: a
    input: {x: 1}
    tool:
      - {name: p, kind: python, code: c, input: {x: 2}}
      - {name: h, kind: http, url: u}
      - {name: c, kind: playbook, path: child}
`, func(t *testing.T, pb *Playbook) {
			tasks := pb.Steps[0].Tasks
			if got := tasks[0].Tool["input"]; !reflect.DeepEqual(got, map[string]any{"x": 2}) {
				t.Errorf("python task input = %#v, want its own x", got)
			}
			if _, ok := tasks[1].Tool["input"]; ok {
				t.Errorf("http task = %#v, want no input", tasks[1].Tool)
			}
			if got := tasks[2].Tool["input"]; !reflect.DeepEqual(got, map[string]any{"x": 1}) {
				t.Errorf("playbook task input = %#v, want the step's", got)
			}
		}},
		{"step input into a workbook call with an empty input", head + "  - step: a\n    input: {x: 5}\n    tool: {kind: workbook, name: score, input: }\n" + wb, func(t *testing.T, pb *Playbook) {
			if got, want := pb.Steps[0].Tool["input"], map[string]any{"x": 5, "factor": 2}; !reflect.DeepEqual(got, want) {
				t.Errorf("input = %#v, want %#v", got, want)
			}
		}},
		{"step input into a workbook call", head + "  - step: a\n    input: {x: 5, factor: 3}\n    tool: {kind: workbook, name: score, input: {factor: 4}}\n" + wb, func(t *testing.T, pb *Playbook) {
			// The entry's input are defaults, the step's override them and
			// the call's own input overrides both.
			if got, want := pb.Steps[0].Tool["input"], map[string]any{"x": 5, "factor": 4}; !reflect.DeepEqual(got, want) {
				t.Errorf("input = %#v, want %#v", got, want)
			}
		}},

		{"tool config under spec", head + `  - step: a
    tool:
      kind: http
      headers: {A: b}
      spec:
        method: GET
        url: "{{ api_url }}/get"
        params: {test: hello}
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: fail}
`, func(t *testing.T, pb *Playbook) {
			s := pb.Steps[0]
			want := map[string]any{"kind": "http", "headers": map[string]any{"A": "b"}, "method": "GET", "url": "{{ api_url }}/get", "params": map[string]any{"test": "hello"}}
			if !reflect.DeepEqual(s.Tool, want) {
				t.Errorf("tool = %#v\nwant %#v", s.Tool, want)
			}
			if s.Policy == nil || s.Policy.Field != "tool.spec.policy" || len(s.Policy.Rules) != 1 || s.Policy.Rules[0].Do != DoFail {
				t.Errorf("policy = %+v", s.Policy)
			}
		}},
		{"spec input merged with step input", head + "  - step: a\n    tool:\n      kind: python\n      spec: {input: {x: 1}, code: c}\n    input: {x: 0, y: 2}\n", func(t *testing.T, pb *Playbook) {
			want := map[string]any{"kind": "python", "code": "c", "input": map[string]any{"x": 1, "y": 2}}
			if got := pb.Steps[0].Tool; !reflect.DeepEqual(got, want) {
				t.Errorf("tool = %#v\nwant %#v", got, want)
			}
		}},
		{"task config under spec", head + "  - step: a\n    tool:\n      - name: t\n        kind: shell\n        spec: {cmds: [echo], policy: {rules: [{else: {do: continue}}]}}\n", func(t *testing.T, pb *Playbook) {
			tk := pb.Steps[0].Tasks[0]
			if !reflect.DeepEqual(tk.Tool, map[string]any{"kind": "shell", "cmds": []any{"echo"}}) {
				t.Errorf("task tool = %#v", tk.Tool)
			}
			if tk.Policy == nil || tk.Policy.Field != "tool[t].spec.policy" || tk.Policy.Rules[0].Do != DoContinue {
				t.Errorf("task policy = %+v", tk.Policy)
			}
		}},
		{"workbook call config under spec keeps the entry's policy", head + "  - step: a\n    tool: {kind: workbook, name: score, spec: {input: {x: 1}}}\nworkbook:\n  - name: score\n    tool: {kind: python, input: {factor: 2}, code: c, spec: {policy: {rules: [{else: {do: fail}}]}}}\n", func(t *testing.T, pb *Playbook) {
			s := pb.Steps[0]
			if got, want := s.Tool["input"], map[string]any{"x": 1, "factor": 2}; !reflect.DeepEqual(got, want) {
				t.Errorf("input = %#v, want %#v", got, want)
			}
			if s.Policy == nil || s.Policy.Step != "a" || s.Policy.Rules[0].Do != DoFail {
				t.Errorf("policy = %+v, want the entry's", s.Policy)
			}
		}},

		{"then keys directly under else", head + `  - step: a
    tool:
      kind: http
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: retry, attempts: 2}
            - else:
                do: continue
                set: {ctx.done: true}
`, func(t *testing.T, pb *Playbook) {
			want := []Rule{
				{When: "{{ output.status == 'error' }}", Do: DoRetry, Attempts: 2, Backoff: BackoffFixed, Delay: DefaultRetryDelay, Line: 13, Col: 15},
				{Else: true, Do: DoContinue, Set: map[string]any{"ctx.done": true}, Line: 15, Col: 15},
			}
			if got := pb.Steps[0].Policy.Rules; !reflect.DeepEqual(got, want) {
				t.Errorf("rules = %+v\nwant %+v", got, want)
			}
		}},
		{"retry directly under else", head + "  - step: a\n    tool:\n      kind: http\n      spec: {policy: {rules: [{else: {do: retry, backoff: exponential, delay: 0.5}}]}}\n", func(t *testing.T, pb *Playbook) {
			want := Rule{Else: true, Do: DoRetry, Attempts: DefaultRetryAttempts, Backoff: BackoffExponential, Delay: 500 * time.Millisecond, Line: 10, Col: 31}
			if got := pb.Steps[0].Policy.Rules; len(got) != 1 || !reflect.DeepEqual(got[0], want) {
				t.Errorf("rules = %+v\nwant [%+v]", got, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pb, err := Parse("pb.yaml", []byte(tt.src), langKinds)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, pb)
		})
	}
}

func TestParseNoETLShapeProblems(t *testing.T) {
	t.Parallel()

	meta := func(lines string) string {
		return strings.Replace(head, "  path: tests/t", "  path: tests/t\n"+lines, 1) + "  - step: a\n    tool: {kind: noop}\n"
	}
	tool := func(body string) string { return head + "  - step: a\n    tool:\n      kind: http\n" + body }
	rules := func(body string) string { return tool("      spec:\n        policy:\n          rules:\n" + body) }
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"label value not a scalar", meta("  labels: {a: {b: c}, d: [e], f: }"), []want{
			{6, "metadata.labels.a must be a scalar, got a mapping", ""},
			{6, "metadata.labels.d must be a scalar, got a list", ""},
			{6, "metadata.labels.f is empty", ""},
		}},
		{"labels not a mapping", meta("  labels: category"), []want{{6, "metadata.labels must be a mapping of names to values, got the scalar", "labels: {category: example"}}},
		{"labels duplicate", meta("  labels:\n    a: x\n    a: y"), []want{{8, `duplicate key "a"`, "first defined at line 7"}}},
		{"version not a scalar", meta("  version: [1, 0]"), []want{{6, "metadata.version must be a scalar, got a list", ""}}},

		{"step input not a mapping", head + "  - step: a\n    tool: {kind: python, code: c}\n    input: [x]\n", []want{{9, `step "a": input must be a mapping, got a list`, "input: {user:"}}},
		{"step input for a tool without input", head + "  - step: a\n    input: {x: 1}\n    tool: {kind: shell, cmds: [ls]}\n", []want{
			{8, `step "a": input has nowhere to go: a shell tool takes no input`, "use a tool that takes input (playbook, python)"},
		}},
		{"step input for tasks without input", head + "  - step: a\n    input: {x: 1}\n    tool:\n      - {name: h, kind: http, url: u}\n      - {name: q, kind: postgres, command: c}\n      - {name: h2, kind: http, url: u}\n", []want{
			{8, `step "a": input has nowhere to go: none of the step's tasks takes input (http, postgres)`, "add a task that takes input"},
		}},
		{"step input for a workbook call without input", head + "  - step: a\n    input: {x: 1}\n    tool: {kind: workbook, name: w}\nworkbook:\n  - {name: w, tool: {kind: noop}}\n", []want{
			{8, `step "a": input has nowhere to go: a noop tool takes no input`, ""},
		}},
		{"step input over a template input", head + "  - step: a\n    input: {x: 1}\n    tool:\n      kind: python\n      code: c\n      input: \"{{ start }}\"\n", []want{
			{12, `step "a": tool.input is not a mapping, so the step's input cannot be merged into it`, "write the tool's input as a mapping"},
		}},
		{"step input over a workbook entry's template input", head + "  - step: a\n    input: {x: 1}\n    tool: {kind: workbook, name: w}\nworkbook:\n  - {name: w, tool: {kind: python, code: c, input: \"{{ x }}\"}}\n", []want{
			{8, `step "a": workbook entry "w"'s input is not a mapping`, "move the step's input keys into the call's input"},
		}},
		{"step input under a workbook call's template input", head + "  - step: a\n    input: {x: 1}\n    tool:\n      kind: workbook\n      name: w\n      input: \"{{ y }}\"\nworkbook:\n  - {name: w, tool: {kind: python, code: c}}\n", []want{
			{12, `step "a": tool.input is not a mapping, so the step's input cannot be merged into it`, "write the call's input as a mapping"},
		}},
		{"step input reads an undeclared keychain", head + "  - step: a\n    input: {t: \"{{ keychain.api.token }}\"}\n    tool: {kind: python, code: c}\n", []want{
			{8, `step "a": template reads keychain.api, which the playbook does not declare`, "keychain: [{name: api"},
		}},
		{"step input beside a broken tool says only what is broken", head + "  - step: a\n    input: {x: 1}\n    tool: {kind: htp}\n", []want{
			{9, `unknown tool kind "htp"`, `did you mean "http"?`},
		}},

		{"spec key twice", tool("      method: GET\n      spec:\n        method: POST\n"), []want{
			{12, `step "a": key "method" is given both beside kind and under tool.spec`, "beside kind at line 10"},
		}},
		{"task spec key twice", head + "  - step: a\n    tool:\n      - {name: t, kind: shell, cmds: [a], spec: {cmds: [b]}}\n", []want{
			{9, `key "cmds" is given both beside kind and under tool[t].spec`, "beside kind at line 9"},
		}},
		{"spec key typo", tool("      spec: {urll: x}\n"), []want{{10, `unknown key "urll" in tool.spec`, `did you mean "url"?`}}},
		{"spec key of another kind", tool("      spec: {cmds: x}\n"), []want{{10, `unknown key "cmds" in tool.spec`, "a http tool's spec holds policy and the tool's own keys: policy, method, url"}}},
		{"spec kind", tool("      spec: {kind: http}\n"), []want{{10, `kind under tool.spec`, "write kind beside spec"}}},
		{"spec retry", tool("      spec: {retry: {attempts: 3}}\n"), []want{{10, `unsupported NoETL key "retry" in tool.spec`, "spec: {policy: {rules:"}}},
		{"spec assert", tool("      spec: {assert: {expects: [x]}}\n"), []want{{10, `unknown key "assert" in tool.spec`, "the tool's own keys"}}},
		{"spec task keys stay beside kind", head + "  - step: a\n    tool:\n      - {kind: noop, spec: {name: t}}\n", []want{
			{9, `step "a": task has no name`, ""},
		}},

		{"else with then and then keys", rules("            - else: {do: continue, then: {do: fail}}\n"), []want{
			{13, `step "a": tool.spec.policy.rules[0].else has both then and do`, "- else: {do: continue}"},
		}},
		{"else shorthand bad action", rules("            - else: {do: skip}\n"), []want{
			{13, `tool.spec.policy.rules[0].else.do "skip" is not an action`, "retry, fail, continue, break or jump"},
		}},
		{"else shorthand retry keys need retry", rules("            - else: {do: continue, attempts: 2}\n"), []want{
			{13, "rules[0].else.attempts only applies to do: retry", "do: retry"},
		}},
		{"else shorthand unknown key", rules("            - else: {do: continue, sett: {x: 1}}\n"), []want{
			{13, `unknown key "sett" in policy then`, `did you mean "set"?`},
		}},
		{"else without then keys", rules("            - else: {doo: continue}\n"), []want{
			{13, `unknown key "doo" in else rule`, "allowed keys here: then"},
		}},
		{"else empty", rules("            - else: {}\n"), []want{{13, "rules[0].else has no then", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, tt.src, langKinds, tt.want, true)
		})
	}
}

// The corpus's HTTP files parse to the tools they mean: simple_http's
// config and policy under tool.spec, http_test's step-level inputs.
func TestCorpusHTTPShapes(t *testing.T) {
	t.Parallel()
	parse := func(rel string) *Playbook {
		src, err := os.ReadFile(filepath.Join(corpusDir, rel))
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("corpus file %s: %v; CI must run these tests", rel, err)
			}
			t.Skipf("corpus file %s: %v", rel, err)
		}
		pb, err := Parse(rel, src, langKinds)
		if err != nil {
			t.Fatalf("Parse %s: %v", rel, err)
		}
		return pb
	}

	pb := parse("examples/simple_http.yaml")
	if want := map[string]string{"category": "example", "version": "v10"}; !reflect.DeepEqual(pb.Metadata.Labels, want) {
		t.Errorf("labels = %#v", pb.Metadata.Labels)
	}
	start := pb.ByName["start"]
	wantTool := map[string]any{"kind": "http", "method": "GET", "url": "{{ api_url }}/get", "params": map[string]any{"test": "hello"}}
	if !reflect.DeepEqual(start.Tool, wantTool) {
		t.Errorf("start tool = %#v\nwant %#v", start.Tool, wantTool)
	}
	if p := start.Policy; p == nil || len(p.Rules) != 3 || p.Rules[0].Do != DoRetry || p.Rules[0].Attempts != 3 ||
		p.Rules[0].Backoff != BackoffExponential || p.Rules[1].Do != DoFail || !p.Rules[2].Else || p.Rules[2].Do != DoContinue {
		t.Errorf("start policy = %+v", start.Policy)
	}
	if got := pb.ByName["process"].Tool["input"]; !reflect.DeepEqual(got, map[string]any{"data": "{{ ctx.response_data }}"}) {
		t.Errorf("process input = %#v", got)
	}
	if got, ok := pb.ByName["end"].Tool["input"]; !ok || !reflect.DeepEqual(got, map[string]any{}) {
		t.Errorf("end input = %#v", got)
	}

	pb = parse("http_test.yaml")
	for step, want := range map[string]map[string]any{
		"process": {"http_response": "{{ start }}"},
		"verify":  {"process_result": "{{ process }}"},
		"end":     {"verify_result": "{{ verify }}"},
	} {
		if got := pb.ByName[step].Tool["input"]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s input = %#v, want %#v", step, got, want)
		}
	}
}
