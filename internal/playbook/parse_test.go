package playbook

import (
	"errors"
	"strings"
	"testing"
)

// testKinds mirrors what the tools package registers: tool kind -> keys.
var testKinds = KindSet{
	"http":   {"method", "url", "headers", "params", "body", "timeout"},
	"python": {"code", "input"},
}

// head is six lines; the first workflow item in a case starts on line 7.
const head = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: t
  path: tests/t
workflow:
`

const helloWorld = `# hello world, NoETL shape
apiVersion: noetl.io/v2
kind: Playbook

metadata:
  name: hello_world
  path: examples/hello_world
  description: says hello
  tags: [demo, smoke]

workload:
  message: "Hello World"
  retries: 3
  when: 2024-01-02
  nested: {a: [1, 2], 1: one}

workflow:
  - step: start
    desc: "Start"
    tool:
      kind: python
      code: |
        result = {"status": "initialized"}
    next:
      spec:
        mode: inclusive
      arcs:
        - step: greet
          when: "{{ workload.retries > 1 }}"
        - step: fetch

  - step: greet
    tool:
      kind: python
      input:
        message: "{{ message }}"
      code: print(message)
    next:
      arcs:
        - step: end

  - step: fetch
    tool: &fetch
      kind: http
      method: GET
      url: "https://example.com/{{ execution_id }}"
      headers: {Authorization: "Bearer x"}
    next:
      arcs: [{step: end}]

  - step: end
    tool:
      <<: *fetch
      url: https://example.com/done
`

func TestParseValid(t *testing.T) {
	t.Parallel()

	pb, err := Parse("hello.yaml", []byte(helloWorld), testKinds)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if pb.APIVersion != APIVersionNoETL || pb.Kind != KindPlaybook {
		t.Errorf("header = %q %q", pb.APIVersion, pb.Kind)
	}
	md := pb.Metadata
	if md.Name != "hello_world" || md.Path != "examples/hello_world" || md.Description != "says hello" || strings.Join(md.Tags, ",") != "demo,smoke" {
		t.Errorf("metadata = %+v", md)
	}
	if pb.Workload["message"] != "Hello World" || pb.Workload["retries"] != 3 {
		t.Errorf("workload = %#v", pb.Workload)
	}
	// Timestamps stay as written and non-string keys become strings so the
	// workload always encodes to JSON.
	if pb.Workload["when"] != "2024-01-02" {
		t.Errorf("timestamp decoded as %#v, want the string as written", pb.Workload["when"])
	}
	if nested, ok := pb.Workload["nested"].(map[string]any); !ok || nested["1"] != "one" {
		t.Errorf("nested = %#v, want map[string]any with key \"1\"", pb.Workload["nested"])
	}
	if pb.Source != helloWorld {
		t.Error("Source does not hold the original text")
	}

	var names []string
	for _, s := range pb.Steps {
		names = append(names, s.Name)
		if pb.ByName[s.Name] != s {
			t.Errorf("ByName[%q] is not the step", s.Name)
		}
	}
	if got := strings.Join(names, ","); got != "start,greet,fetch,end" {
		t.Errorf("steps = %s", got)
	}
	if pb.StartStep().Name != "start" {
		t.Errorf("StartStep = %s", pb.StartStep().Name)
	}

	start := pb.ByName["start"]
	if start.Line != 18 || start.Col != 5 || start.Desc != "Start" {
		t.Errorf("start at %d:%d desc %q, want 18:5", start.Line, start.Col, start.Desc)
	}
	if start.Tool["kind"] != "python" || !strings.Contains(start.Tool["code"].(string), "initialized") {
		t.Errorf("start tool = %#v", start.Tool)
	}
	if start.Next.Mode != ModeInclusive || len(start.Next.Arcs) != 2 {
		t.Fatalf("start next = %+v", start.Next)
	}
	a := start.Next.Arcs[0]
	if a.Step != "greet" || a.When != "{{ workload.retries > 1 }}" || a.Line != 28 || a.Col != 17 {
		t.Errorf("arc 0 = %+v, want greet at 28:17", a)
	}
	if pb.ByName["greet"].Next.Mode != ModeExclusive {
		t.Errorf("mode default = %q, want exclusive", pb.ByName["greet"].Next.Mode)
	}
	if pb.ByName["end"].Next != nil {
		t.Error("end step has a next")
	}
	// The merge key pulls the anchored tool in; explicit keys win.
	end := pb.ByName["end"].Tool
	if end["kind"] != "http" || end["method"] != "GET" || end["url"] != "https://example.com/done" {
		t.Errorf("merged tool = %#v", end)
	}
	if h, ok := pb.ByName["fetch"].Tool["headers"].(map[string]any); !ok || h["Authorization"] != "Bearer x" {
		t.Errorf("headers = %#v", pb.ByName["fetch"].Tool["headers"])
	}
}

func TestParseStartStepDefaultsToFirst(t *testing.T) {
	t.Parallel()

	pb, err := Parse("t.yaml", []byte(head+`  - step: first
    tool: {kind: python, code: x}
`), testKinds)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if pb.StartStep().Name != "first" {
		t.Errorf("StartStep = %q, want first", pb.StartStep().Name)
	}
	if _, err := Parse("t.yaml", []byte(strings.Replace(head, "noetl.io/v2", "millrace.io/v1", 1)+"  - step: a\n    tool: {kind: python}\n"), testKinds); err != nil {
		t.Errorf("millrace.io/v1 rejected: %v", err)
	}
}

// want is one expected problem: its line, and substrings of message and hint.
type want struct {
	line      int
	msg, hint string
}

func TestParseProblems(t *testing.T) {
	t.Parallel()

	step := func(name string) string { return "  - step: " + name + "\n    tool: {kind: python}\n" }
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"empty file", "", []want{{1, "file is empty", "apiVersion"}}},
		{"whitespace only", " \n\t\n", []want{{1, "file is empty", ""}}},
		{"only comments", "# nothing\n", []want{{1, "no YAML content", ""}}},
		{"plain text", "hello there\n", []want{{1, "not a playbook: top level is the scalar", "mapping"}}},
		{"top level list", "- a\n- b\n", []want{{1, "top level is a list", ""}}},
		{"binary", "\x00\x01\x02", []want{{0, "invalid YAML: control characters", "indentation"}}},
		// Syntax errors carry the line yaml.v3 reports, which is often the
		// start of the enclosing block rather than the offending character.
		{"yaml unclosed flow", head + "  - step: a\n    tool: {kind: python\n", []want{{7, "invalid YAML: did not find expected ',' or '}'", "indentation"}}},
		{"yaml bad indentation", head + "  - step: a\n    tool:\n      kind: python\n     code: x\n", []want{{6, "invalid YAML: did not find expected key", ""}}},
		{"yaml tab", head + "  - step: a\n\ttool: {kind: python}\n", []want{{7, "invalid YAML: found a tab character", "tabs"}}},
		{"yaml bad mapping", head + step("a") + "    desc: a: b\n", []want{{9, "invalid YAML: mapping values are not allowed", ""}}},
		{"two documents", head + step("a") + "---\nfoo: 1\n", []want{{9, "more than one YAML document", "own file"}}},
		{"missing header", "workflow:\n" + step("a"), []want{
			{1, "missing apiVersion", ""}, {1, "missing kind", ""}, {1, "missing metadata", ""},
		}},
		{"bad apiVersion", strings.Replace(head, "noetl.io/v2", "noetl.io/v1", 1) + step("a"), []want{{1, `unsupported apiVersion "noetl.io/v1"`, "millrace.io/v1"}}},
		{"bad kind", strings.Replace(head, "kind: Playbook", "kind: Workbook", 1) + step("a"), []want{{2, `unsupported kind "Workbook"`, "kind: Playbook"}}},
		{"unknown top key near", head + step("a") + "worklaod: {}\n", []want{{9, `unknown key "worklaod" at top level`, `did you mean "workload"?`}}},
		{"unknown top key far", head + step("a") + "banana: 1\n", []want{{9, `unknown key "banana"`, "allowed keys here: apiVersion"}}},
		{"unsupported top key", head + step("a") + "vars: {x: 1}\n", []want{{9, `unsupported NoETL key "vars" at top level: Millrace does not implement it`, "workload"}}},
		{"duplicate key", head + step("a") + "kind: Playbook\n", []want{{9, `duplicate key "kind"`, "first defined at line 2"}}},
		{"missing workflow", "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: a, path: b}\n", []want{{1, "missing workflow", ""}}},
		{"empty workflow", strings.TrimSuffix(head, "\n") + " []\n", []want{{6, "workflow is empty", ""}}},
		{"workflow not list", strings.TrimSuffix(head, "\n") + " {a: 1}\n", []want{{6, "workflow must be a list, got a mapping", ""}}},
		{"workload not mapping", head + step("a") + "workload: [1]\n", []want{{9, "workload must be a mapping, got a list", ""}}},
		{"infinite number", head + step("a") + "workload: {x: .inf}\n", []want{{9, "cannot be represented in JSON", "quote"}}},

		{"metadata missing name and path", "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata:\n  description: x\nworkflow:\n" + step("a"), []want{
			{4, "metadata.name is required", ""}, {4, "metadata.path is required", ""},
		}},
		{"metadata not mapping", "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: x\nworkflow:\n" + step("a"), []want{{3, "metadata must be a mapping", ""}}},
		{"metadata empty name", strings.Replace(head, "name: t", "name:", 1) + step("a"), []want{{4, "metadata.name is empty", ""}}},
		{"metadata unknown key", strings.Replace(head, "  path: tests/t", "  path: tests/t\n  tag: [x]", 1) + step("a"), []want{{6, `unknown key "tag" in metadata`, `did you mean "tags"?`}}},
		{"path dotdot", strings.Replace(head, "tests/t", "tests/../../etc", 1) + step("a"), []want{{5, "must not contain ..", ""}}},
		{"path bad chars", strings.Replace(head, "tests/t", "tests/t t", 1) + step("a"), []want{{5, "invalid characters", ""}}},
		{"tags not list", strings.Replace(head, "  path: tests/t", "  path: tests/t\n  tags: x", 1) + step("a"), []want{{6, "metadata.tags must be a list", ""}}},

		{"non-scalar keys", head + "  - step: a\n    tool: {kind: python, [a]: 1, input: {[b]: 2}}\n", []want{
			{8, "mapping key must be a scalar, got a list", ""}, {8, "mapping key must be a scalar, got a list", ""},
		}},
		{"step missing name", head + "  - desc: x\n    tool: {kind: python}\n", []want{{7, "workflow item has no step name", ""}}},
		{"step not mapping", head + "  - just_a_string\n", []want{{7, "workflow item must be a mapping", ""}}},
		{"step bad name", head + "  - step: 9lives\n    tool: {kind: python}\n", []want{{7, `invalid step name "9lives"`, "letter"}}},
		{"step name with space", head + "  - step: a b\n    tool: {kind: python}\n", []want{{7, `invalid step name "a b"`, ""}}},
		{"reserved step name", head + "  - step: workload\n    tool: {kind: python}\n", []want{{7, `step name "workload" is reserved`, "rename"}}},
		{"duplicate step", head + step("a") + step("a"), []want{{9, `duplicate step name "a"`, "first defined at line 7"}}},
		{"step unknown key near", head + step("a") + "    nxt: {}\n", []want{{9, `unknown key "nxt" in step`, `did you mean "next"?`}}},
		{"step spec", head + step("a") + "    spec: {}\n", []want{{9, `unsupported NoETL key "spec" in step`, "timeout"}}},
		{"step input for a tool without input", head + "  - step: a\n    tool: {kind: http}\n    input: {x: 1}\n", []want{{9, `step "a": input has nowhere to go: a http tool takes no input`, "python"}}},
		{"step missing tool", head + "  - step: a\n    desc: x\n", []want{{7, `step "a" has no tool`, "kind"}}},
		{"tool not mapping", head + "  - step: a\n    tool: python\n", []want{{8, `step "a": tool must be a mapping or a list, got the scalar "python"`, "named tasks"}}},
		{"tool missing kind", head + "  - step: a\n    tool:\n      code: x\n", []want{{9, `step "a": tool has no kind`, "kind: <http|python>"}}},
		{"tool unknown kind near", head + "  - step: a\n    tool: {kind: htp}\n", []want{{8, `unknown tool kind "htp"`, `did you mean "http"?`}}},
		{"tool unknown kind far", head + "  - step: a\n    tool: {kind: duckdb}\n", []want{{8, `unknown tool kind "duckdb"`, "known kinds: http, python"}}},
		{"tool unknown key", head + "  - step: a\n    tool:\n      kind: http\n      ulr: x\n", []want{{10, `unknown key "ulr" in http tool`, `did you mean "url"?`}}},
		{"tool key of another kind", head + "  - step: a\n    tool:\n      kind: http\n      script: x\n", []want{{10, `unknown key "script" in http tool`, "allowed keys here: kind, method"}}},
		{"tool retry", head + "  - step: a\n    tool:\n      kind: http\n      retry: {}\n", []want{{10, `unsupported NoETL key "retry" in http tool`, "spec: {policy: {rules:"}}},

		{"next not mapping", head + step("a") + "    next: b\n", []want{{9, "next must be a mapping", "arcs"}}},
		{"next list form", head + step("a") + "    next:\n      - step: b\n", []want{{10, "next must be a mapping, got a list", "spec"}}},
		{"next unknown key", head + step("a") + "    next:\n      arc: []\n", []want{
			{10, `unknown key "arc" in next`, `did you mean "arcs"?`}, {10, "next has no arcs", ""},
		}},
		{"next empty arcs", head + step("a") + "    next: {arcs: []}\n", []want{{9, "next.arcs is empty", ""}}},
		{"arcs not list", head + step("a") + "    next: {arcs: b}\n", []want{{9, "next.arcs must be a list", ""}}},
		{"bad mode", head + step("a") + "    next:\n      spec: {mode: parallel}\n      arcs: [{step: b}]\n" + step("b"), []want{{10, `unknown next mode "parallel"`, "inclusive"}}},
		{"spec unknown key", head + step("a") + "    next:\n      spec: {mood: inclusive}\n      arcs: [{step: b}]\n" + step("b"), []want{{10, `unknown key "mood" in next.spec`, `did you mean "mode"?`}}},
		{"arc not mapping", head + step("a") + "    next:\n      arcs: [b]\n" + step("b"), []want{
			{10, "arc must be a mapping", ""},
		}},
		{"arc missing step", head + step("a") + "    next:\n      arcs:\n        - when: x\n", []want{{11, "arc has no target step", ""}}},
		{"arc unknown key", head + step("a") + "    next:\n      arcs:\n        - step: b\n          sett: {x: 1}\n" + step("b"), []want{{12, `unknown key "sett" in arc`, `did you mean "set"?`}}},
		{"arc unknown target near", head + step("start") + "    next:\n      arcs:\n        - step: ende\n" + step("end"), []want{
			{11, `step "start": arc targets unknown step "ende"`, `did you mean "end"?`},
		}},
		{"arc unknown target far", head + step("a") + "    next: {arcs: [{step: zzzzzz}]}\n", []want{{9, `unknown step "zzzzzz"`, "known steps: a"}}},

		{"self cycle", head + step("a") + "    next: {arcs: [{step: a}]}\n", []want{{9, "cycle a -> a can never end", "add a `when` to one of its arcs, or iterate with `loop:`"}}},
		{"cycle", head + step("a") + "    next: {arcs: [{step: b}]}\n" + step("b") +
			"    next:\n      arcs:\n        - step: c\n" + step("c") + "    next:\n      arcs:\n        - step: a\n",
			[]want{{19, "cycle a -> b -> c -> a can never end", "add a `when`"}}},
		// a -> b is guarded, but a -> c -> a is not; DFS order must not hide it.
		{"unguarded cycle beside a guarded one", head + step("a") + "    next:\n      spec: {mode: inclusive}\n      arcs:\n        - {step: b, when: '{{ x }}'}\n        - {step: c}\n" +
			step("b") + "    next: {arcs: [{step: a}]}\n" + step("c") + "    next: {arcs: [{step: a}]}\n",
			[]want{{19, "cycle a -> c -> a can never end", ""}}},
		{"many problems reported together", head +
			"  - step: a\n    tool: {kind: htp}\n    lop: 1\n" +
			"  - step: a\n    tool: {kind: python, cod: x}\n",
			[]want{
				{8, `unknown tool kind "htp"`, ""}, {9, `unknown key "lop"`, `did you mean "loop"?`},
				{10, `duplicate step name "a"`, ""}, {11, `unknown key "cod" in python tool`, `did you mean "code"?`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, tt.src, testKinds, tt.want, false)
		})
	}
}

func TestProblemError(t *testing.T) {
	t.Parallel()

	p := Problem{File: "a.yaml", Line: 3, Col: 5, Msg: "bad", Hint: "fix it"}
	if got := p.Error(); got != "a.yaml:3:5: bad (hint: fix it)" {
		t.Errorf("Error() = %q", got)
	}
	if got := (Problem{File: "a.yaml", Msg: "bad"}).Error(); got != "a.yaml: bad" {
		t.Errorf("Error() without position = %q", got)
	}
	ps := Problems{p, {File: "a.yaml", Line: 4, Col: 1, Msg: "worse"}}
	if got := ps.Error(); got != "a.yaml:3:5: bad (hint: fix it)\na.yaml:4:1: worse" {
		t.Errorf("Problems.Error() = %q", got)
	}
}

func TestParseColumns(t *testing.T) {
	t.Parallel()

	_, err := Parse("c.yaml", []byte(head+"  - step: a\n    tool: {kind: python, cod: x}\n"), testKinds)
	var probs Problems
	if !errors.As(err, &probs) || len(probs) != 1 {
		t.Fatalf("err = %v", err)
	}
	if got := probs[0].Error(); !strings.HasPrefix(got, "c.yaml:8:26: unknown key \"cod\"") {
		t.Errorf("Error() = %q, want c.yaml:8:26 prefix", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(helloWorld)
	f.Add(head + "  - step: a\n    tool: {kind: python}\n    next: {arcs: [{step: a}]}\n")
	f.Add("a: &x [*x]\n")
	f.Add("x: &a {<<: *a}\n")
	f.Add("- &a [*a, *a]\n")
	f.Add("workflow: [{step: s, tool: {<<: [{kind: http}], url: u}, next: {arcs: [{step: s, when: '{{x}}'}]}}]")
	f.Add("{? [a]: b}")
	f.Add(languagePlaybook)
	f.Add(head + "  - step: a\n    loop: {in: '{{ x }}', spec: {mode: parallel, max_in_flight: 2}}\n    tool: [{name: t, kind: workbook}]\n    set: {ctx.a.b: 1}\nworkbook: [{name: t, tool: {kind: http, spec: {policy: {rules: [{else: {then: {do: retry}}}]}}}}]\n")
	f.Fuzz(func(t *testing.T, src string) {
		pb, err := Parse("fuzz.yaml", []byte(src), testKinds)
		if err == nil {
			if pb == nil || len(pb.Steps) == 0 || pb.StartStep() == nil {
				t.Fatalf("valid playbook without steps: %#v", pb)
			}
			return
		}
		var probs Problems
		if !errors.As(err, &probs) || len(probs) == 0 {
			t.Fatalf("error %v (%T) is not a non-empty Problems", err, err)
		}
		if pb != nil {
			t.Fatal("playbook returned with problems")
		}
		for i := 1; i < len(probs); i++ {
			if probs[i].Line < probs[i-1].Line {
				t.Fatalf("problems out of line order: %v", probs)
			}
		}
	})
}

// checkProblems asserts that src fails to parse with exactly want, in order:
// line, message and hint (and a column, when needCol).
func checkProblems(t *testing.T, src string, kinds KindSet, want []want, needCol bool) {
	t.Helper()
	pb, err := Parse("pb.yaml", []byte(src), kinds)
	if pb != nil {
		t.Errorf("Parse returned a playbook along with problems")
	}
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("Parse error = %v (%T), want Problems", err, err)
	}
	if len(probs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(probs), len(want), probs)
	}
	for i, w := range want {
		p := probs[i]
		if p.Line != w.line || (needCol && p.Col == 0) || !strings.Contains(p.Msg, w.msg) || !strings.Contains(p.Hint, w.hint) || p.File != "pb.yaml" {
			t.Errorf("problem %d = %q\nwant line %d, msg containing %q, hint containing %q", i, p.Error(), w.line, w.msg, w.hint)
		}
	}
}
