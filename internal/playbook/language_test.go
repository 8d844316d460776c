package playbook

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// langKinds are the tool kinds and keys the language tests and the NoETL
// corpus need; the tools package registers (at least) these.
var langKinds = KindSet{
	"noop":     {"result"},
	"shell":    {"cmds", "env", "cwd", "timeout_seconds"},
	"http":     {"method", "url", "headers", "params", "body", "timeout", "auth"},
	"python":   {"code", "input"},
	"postgres": {"auth", "command"},
	"duckdb":   {"database", "query", "auth"},
	"nats":     {"auth", "operation", "bucket", "key", "value"},
	"playbook": {"path", "task", "return_step", "input"},
}

const languagePlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: lang, path: tests/lang}
workload:
  users: [{name: a}, {name: b}]
keychain:
  - name: pg
    credential: pg_local
    kind: postgres
  - {name: api, credential: api_token}
workbook:
  - name: score
    tool:
      kind: python
      input: {x: null, factor: 2}
      assert: {expects: [x], returns: [score]}
      code: 'result = {"score": x * factor}'
workflow:
  - step: start
    timeout: 2.5
    tool:
      kind: http
      url: "https://example.com"
      headers: {Authorization: "Bearer {{ keychain.api.token }}"}
      spec:
        policy:
          rules:
            - when: "{{ output.http.status in [502, 503] }}"
              then: {do: retry, attempts: 5, backoff: exponential, delay: 0.5}
            - when: "{{ output.status == 'error' }}"
              then: {do: fail}
            - else:
                then: {do: continue, set: {ctx.fetched: true}}
    set:
      count: "{{ result.n }}"
    next:
      spec: {mode: inclusive}
      arcs:
        - step: each
          set: {ctx.first: "{{ start.data }}"}
        - step: scored
          when: "{{ start.ok }}"
  - step: each
    loop:
      in: "{{ users }}"
      iterator: user
      spec: {mode: parallel, max_in_flight: 4}
    tool:
      - name: fetch
        kind: http
        url: "https://example.com/{{ user.name }}"
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' }}"
                then: {do: retry}
        set: {last: "{{ output.data }}"}
      - name: store
        kind: postgres
        auth: pg
        command: "insert {{ fetch.id }} {{ keychain['pg'].user }}"
  - step: scored
    tool:
      kind: workbook
      name: score
      input: {x: 3}
    next:
      arcs:
        - step: scored
          when: "{{ scored.score < 10 }}"
`

func TestParseLanguage(t *testing.T) {
	t.Parallel()

	pb, err := Parse("lang.yaml", []byte(languagePlaybook), langKinds)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if want := []KeychainEntry{{Name: "pg", Credential: "pg_local", Kind: "postgres", Line: 7, Col: 5}, {Name: "api", Credential: "api_token", Line: 10, Col: 5}}; !reflect.DeepEqual(pb.Keychain, want) {
		t.Errorf("keychain = %+v\nwant %+v", pb.Keychain, want)
	}

	start := pb.ByName["start"]
	if start.Timeout != 2500*time.Millisecond {
		t.Errorf("timeout = %v", start.Timeout)
	}
	if _, ok := start.Tool["spec"]; ok || start.Tool["url"] != "https://example.com" {
		t.Errorf("start tool = %#v, want spec stripped", start.Tool)
	}
	p := start.Policy
	if p == nil || p.Step != "start" || p.Field != "tool.spec.policy" || len(p.Rules) != 3 {
		t.Fatalf("policy = %+v", p)
	}
	wantRules := []Rule{
		{When: "{{ output.http.status in [502, 503] }}", Do: DoRetry, Attempts: 5, Backoff: BackoffExponential, Delay: 500 * time.Millisecond, Line: 28, Col: 15},
		{When: "{{ output.status == 'error' }}", Do: DoFail, Line: 30, Col: 15},
		{Else: true, Do: DoContinue, Set: map[string]any{"ctx.fetched": true}, Line: 32, Col: 15},
	}
	if !reflect.DeepEqual(p.Rules, wantRules) {
		t.Errorf("rules = %+v\nwant %+v", p.Rules, wantRules)
	}
	if !reflect.DeepEqual(start.Set, map[string]any{"count": "{{ result.n }}"}) {
		t.Errorf("set = %#v", start.Set)
	}
	if a := start.Next.Arcs[0]; !reflect.DeepEqual(a.Set, map[string]any{"ctx.first": "{{ start.data }}"}) {
		t.Errorf("arc set = %#v", a.Set)
	}

	each := pb.ByName["each"]
	if each.Tool != nil || len(each.Tasks) != 2 {
		t.Fatalf("each: tool %#v, tasks %+v", each.Tool, each.Tasks)
	}
	if want := (&Loop{In: "{{ users }}", Iterator: "user", Mode: LoopParallel, MaxInFlight: 4, Exec: LoopExecDistributed, Line: 44, Col: 5}); !reflect.DeepEqual(each.Loop, want) {
		t.Errorf("loop = %+v", each.Loop)
	}
	fetch := each.Tasks[0]
	if fetch.Name != "fetch" || fetch.Line != 49 || fetch.Tool["kind"] != "http" || fetch.Tool["name"] != nil || fetch.Tool["set"] != nil || fetch.Tool["spec"] != nil {
		t.Errorf("task fetch = %+v", fetch)
	}
	if r := fetch.Policy.Rules[0]; fetch.Policy.Field != "tool[fetch].spec.policy" || r.Attempts != DefaultRetryAttempts || r.Delay != DefaultRetryDelay || r.Backoff != BackoffFixed {
		t.Errorf("retry defaults: %+v %+v", fetch.Policy, r)
	}
	if !reflect.DeepEqual(fetch.Set, map[string]any{"last": "{{ output.data }}"}) {
		t.Errorf("task set = %#v", fetch.Set)
	}

	// The workbook call resolves to the entry's tool, the caller's input
	// merged over the entry's.
	scored := pb.ByName["scored"]
	want := map[string]any{"kind": "python", "input": map[string]any{"x": 3, "factor": 2}, "code": `result = {"score": x * factor}`}
	if !reflect.DeepEqual(scored.Tool, want) {
		t.Errorf("workbook tool = %#v\nwant %#v", scored.Tool, want)
	}
	if !reflect.DeepEqual(scored.Assert, &Assert{Expects: []string{"x"}, Returns: []string{"score"}}) {
		t.Errorf("assert = %+v", scored.Assert)
	}
}

func TestParseCorpusShapes(t *testing.T) {
	t.Parallel()

	// Loop defaults, and a workbook entry called from a task list.
	pb, err := Parse("d.yaml", []byte(head+`  - step: a
    loop: {in: "{{ xs }}"}
    tool: {kind: noop}
workbook:
  - {name: w, tool: {kind: noop, result: 1}}
`), langKinds)
	if err != nil {
		t.Fatal(err)
	}
	if l := pb.Steps[0].Loop; l.Iterator != DefaultIterator || l.Mode != LoopSequential || l.MaxInFlight != 1 {
		t.Errorf("loop defaults = %+v", l)
	}
	pb, err = Parse("d.yaml", []byte(head+`  - step: a
    loop: {in: "{{ xs }}", spec: {mode: parallel}}
    tool:
      - {name: w, kind: workbook}
workbook:
  - {name: w, tool: {kind: noop, result: 1}}
`), langKinds)
	if err != nil {
		t.Fatal(err)
	}
	if l := pb.Steps[0].Loop; l.MaxInFlight != DefaultMaxInFlight {
		t.Errorf("parallel default max_in_flight = %d", l.MaxInFlight)
	}
	if tk := pb.Steps[0].Tasks[0]; tk.Name != "w" || !reflect.DeepEqual(tk.Tool, map[string]any{"kind": "noop", "result": 1}) {
		t.Errorf("workbook task = %+v", tk)
	}
}

func TestParseLanguageProblems(t *testing.T) {
	t.Parallel()

	step := func(name string) string { return "  - step: " + name + "\n    tool: {kind: noop}\n" }
	tool := func(body string) string { return head + "  - step: a\n    tool:\n      kind: http\n" + body }
	rules := func(body string) string { return tool("      spec:\n        policy:\n          rules:\n" + body) }
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"metadata labels", strings.Replace(head, "  path: tests/t", "  path: tests/t\n  labels: [a]", 1) + step("a"), []want{{6, "metadata.labels must be a mapping of names to values, got a list", "category: example"}}},
		{"top vars", head + step("a") + "vars: {}\n", []want{{9, `unsupported NoETL key "vars"`, "workload"}}},

		{"keychain not list", head + step("a") + "keychain: {pg: x}\n", []want{{9, "keychain must be a list", "keychain.pg"}}},
		{"keychain entry", head + step("a") + "keychain:\n  - {name: pg}\n  - {name: pg, credential: x}\n  - {credential: x, knd: y}\n", []want{
			{10, `keychain entry "pg" has no credential`, ""}, {11, `duplicate keychain name "pg"`, ""},
			{12, "keychain entry has no name", ""}, {12, `unknown key "knd" in keychain entry`, `did you mean "kind"?`},
		}},
		{"keychain undeclared", tool("      url: \"{{ keychain.db.url }}\"\n"), []want{{10, `template reads keychain.db, which the playbook does not declare`, "keychain: [{name: db"}}},

		{"workbook unknown entry near", head + "  - step: a\n    tool: {kind: workbook, name: scor}\nworkbook:\n  - {name: score, tool: {kind: noop}}\n",
			[]want{{8, `workbook entry "scor" does not exist`, `did you mean "score"?`}}},
		{"workbook unknown entry none", head + "  - step: a\n    tool: {kind: workbook, name: x}\n", []want{{8, `workbook entry "x" does not exist`, "top-level `workbook:`"}}},
		{"workbook call without name", head + "  - step: a\n    tool: {kind: workbook}\n", []want{{8, "workbook tool has no name", ""}}},
		{"workbook call bad key", head + "  - step: a\n    tool: {kind: workbook, name: w, cmds: x}\nworkbook:\n  - {name: w, tool: {kind: noop}}\n",
			[]want{{8, `unknown key "cmds" in call of workbook entry "w" (a noop tool)`, "allowed keys here: kind, result"}}},
		{"workbook nested", head + step("a") + "workbook:\n  - {name: w, tool: {kind: workbook, name: v}}\n", []want{{10, "cannot call another workbook entry", ""}}},
		{"workbook entry problems", head + step("a") + "workbook:\n  - {name: w}\n  - {name: w, tool: {kind: noop}}\n  - {name: v, tool: {kind: noop, x: 1}}\n", []want{
			{10, `workbook entry "w" has no tool`, ""}, {11, `duplicate workbook entry "w"`, "first defined at line 10"}, {12, `unknown key "x" in noop tool`, ""},
		}},

		{"task list empty", head + "  - step: a\n    tool: []\n", []want{{8, `step "a": tool list is empty`, ""}}},
		{"task problems", head + "  - step: a\n    tool:\n      - kind: noop\n      - {name: 9x, kind: noop}\n      - {name: loop, kind: noop}\n      - {name: t, kind: noop}\n      - {name: t, kind: noop}\n      - {name: u, kind: nop}\n      - x\n", []want{
			{9, `step "a": task has no name`, "later tasks read"}, {10, `invalid task name "9x"`, ""}, {11, `task name "loop" is reserved`, ""},
			{13, `duplicate task name "t"`, "first defined at line 12"}, {14, `unknown tool kind "nop"`, `did you mean "noop"?`}, {15, "task must be a mapping", ""},
		}},
		{"task unknown key", head + "  - step: a\n    tool:\n      - {name: t, kind: noop, sett: {}}\n", []want{{9, `unknown key "sett" in noop tool`, `did you mean "set"?`}}},

		{"loop not mapping", head + step("a") + "    loop: \"{{ xs }}\"\n", []want{{9, `step "a": loop must be a mapping`, "iterator"}}},
		{"loop problems", head + step("a") + "    loop:\n      iterator: 1x\n      spec: {mode: fast, max_in_flight: 0, policy: {exec: remote}}\n      over: x\n", []want{
			{9, `step "a": loop has no `, ""}, {10, `invalid loop iterator "1x"`, ""},
			{11, `unknown loop mode "fast"`, "parallel"}, {11, "max_in_flight must be an integer >= 1", ""},
			{11, `unknown loop.spec.policy.exec "remote"`, "distributed or local"}, {12, `unknown key "over" in loop`, "allowed keys here: in, iterator, spec"},
		}},
		{"loop in not a template", head + step("a") + "    loop: {in: [1, 2]}\n", []want{{9, "loop.in must be a {{ }} template, got a list", "{{ [1, 2, 3] }}"}}},
		{"loop reserved iterator", head + step("a") + "    loop: {in: \"{{ xs }}\", iterator: output}\n", []want{{9, `loop iterator "output" is reserved`, ""}}},
		{"loop sequential max_in_flight", head + step("a") + "    loop:\n      in: \"{{ xs }}\"\n      spec: {max_in_flight: 3}\n", []want{{11, "max_in_flight 3 needs loop.spec.mode parallel", "mode: parallel"}}},

		{"set problems", head + step("a") + "    set:\n      ctx.a-b: 1\n      workload.x: 2\n      ctx: 3\n      ok.path: 4\n", []want{
			{10, `step "a": set: invalid target "ctx.a-b"`, "ctx.<name>"}, {11, `target "workload.x" is reserved`, ""}, {12, `target "ctx" is reserved`, ""},
		}},
		{"set not mapping", head + step("a") + "    set: [a]\n", []want{{9, `step "a": set must be a mapping, got a list`, ""}}},
		{"arc set", head + step("a") + "    next:\n      arcs:\n        - {step: b, set: {ctx.1: x}}\n" + step("b"), []want{{11, `step "a": next.arcs[0].set: invalid target "ctx.1"`, ""}}},

		{"timeout zero", head + step("a") + "    timeout: 0\n", []want{{9, `step "a": timeout must be a positive number of seconds, got the scalar "0"`, "timeout: 30"}}},
		{"timeout string", head + step("a") + "    timeout: 30s\n", []want{{9, "timeout must be a positive number", ""}}},
		{"timeout huge", head + step("a") + "    timeout: 1e9\n", []want{{9, "timeout must be a positive number", "at most 86400"}}},

		{"spec tool key twice", tool("      url: x\n      spec: {method: GET, url: y, policy: {rules: [{when: x, then: {do: fail}}]}}\n"), []want{
			{11, `step "a": key "url" is given both beside kind and under tool.spec`, "beside kind at line 10"},
		}},
		{"spec typo", tool("      spec: {polcy: {}}\n"), []want{{10, `unknown key "polcy" in tool.spec`, `did you mean "policy"?`}}},
		{"spec not mapping", tool("      spec: x\n"), []want{{10, "tool.spec must be a mapping", ""}}},
		{"policy admit", tool("      spec: {policy: {admit: {rules: []}}}\n"), []want{{10, `unsupported NoETL key "admit" in policy`, "arcs that lead to it"}}},
		{"policy no rules", tool("      spec: {policy: {}}\n"), []want{{10, "tool.spec.policy has no rules", ""}}},
		{"rules empty", tool("      spec: {policy: {rules: []}}\n"), []want{{10, "rules must be a non-empty list", ""}}},
		{"rule shapes", rules(
			"            - {when: x, else: {then: {do: fail}}}\n" +
				"            - {when: x}\n" +
				"            - {then: {do: fail}}\n" +
				"            - {when: x, then: {do: skip}}\n" +
				"            - {when: x, then: {do: fail, attempts: 2}}\n" +
				"            - {when: x, then: {do: retry, attempts: 0, backoff: cubic, delay: -1}}\n" +
				"            - {when: x, then: {attempts: 2}}\n"),
			[]want{
				{13, "has both when and else", ""}, {14, "rules[1] has no then", ""}, {15, "rules[2] needs when (or else) and then", ""},
				{16, `rules[3].then.do "skip" is not an action`, "retry, fail, continue, break or jump"},
				{17, "rules[4].then.attempts only applies to do: retry", ""},
				{18, "attempts must be an integer from 1 to 100", ""}, {18, `backoff "cubic" is unknown`, "exponential"}, {18, "delay must be a non-negative number", ""},
				{19, "rules[6].then has no do", ""},
			}},
		{"else shapes", rules(
			"            - else: {do: continue}\n" +
				"            - else:\n" +
				"              then: {do: continue}\n" +
				"            - when: x\n" +
				"              then: {do: fail}\n"),
			[]want{
				{14, "comes after the else rule at line 13", "move the else rule last"},
				{16, "rules[2] comes after the else rule", ""},
			}},

		{"reserved step name", head + "  - step: ctx\n    tool: {kind: noop}\n", []want{{7, `step name "ctx" is reserved`, ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, tt.src, langKinds, tt.want, false)
		})
	}
}
