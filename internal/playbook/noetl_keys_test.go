package playbook

import (
	"reflect"
	"strings"
	"testing"
)

// NoETL constructs found in its own fixtures, each accepted with its effect
// (or its documented lack of one) or refused precisely.
func TestNoETLCorpusKeys(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"noop": {"result"}, "python": {"code", "input"}, "http": {"url", "endpoint", "timeout", "timeout_seconds"}}
	doc := func(top, steps string) string {
		return "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: /tests/t, exposes_as_mcp: true}\n" + top + "workflow:\n" + steps
	}
	src := doc("executor:\n  profile: auto\n  version: noetl-runtime/1\n  requires: {tools: [python, noop], features: [result_storage]}\n"+
		"  spec: {entry_step: first, no_next_is_error: false, policy: {defaults: {timeout_s: 30}, results: {reference_first: true}}}\n",
		"  - step: start\n    tool: {kind: noop}\n"+
			"  - step: first\n    output: {store: {kind: kv}, output_select: [a]}\n"+
			"    tool: {kind: python, args: {x: 1}, code: 'result = x', output: {store: {kind: gcs}, inline_max_bytes: 10}}\n"+
			"    next:\n      spec: {mode: exclusive, on_no_match: quiet}\n      arcs:\n        - {step: web, cond: x == 1}\n        - {step: start}\n"+
			"  - step: web\n    loop:\n      in: \"{{ [1, 2] }}\"\n      spec: {mode: parallel, max_in_flight: \"{{ n | int }}\", policy: {exec: local, results: {preserve_order: true}}}\n"+
			"    tool:\n      kind: http\n      url: http://x\n      timeout_seconds: 5\n      output_select: {strategy: size_threshold}\n"+
			"      spec:\n        policy:\n          rules:\n            - else:\n              then: {do: continue}\n"+
			"    next: {arcs: [{step: end}]}\n"+
			"  - step: end\n    tool: {kind: noop}\n")
	pb, err := Parse("pb.yaml", []byte(src), kinds)
	if err != nil {
		t.Fatal(err)
	}
	if pb.Metadata.Path != "tests/t" || pb.StartStep().Name != "first" {
		t.Errorf("path %q, start %q; want tests/t (leading / dropped) and the executor's entry_step", pb.Metadata.Path, pb.StartStep().Name)
	}
	first, web, end := pb.ByName["first"], pb.ByName["web"], pb.ByName["end"]
	if got, want := first.Tool, map[string]any{"kind": "python", "input": map[string]any{"x": 1}, "code": "result = x"}; !reflect.DeepEqual(got, want) {
		t.Errorf("first tool = %v, want %v (args is input; output has no effect)", got, want)
	}
	if first.Next.OnNoMatch != "quiet" || first.Next.Arcs[0].When != "" {
		t.Errorf("next = %+v", first.Next)
	}
	if got, want := web.Tool, map[string]any{"kind": "http", "url": "http://x", "timeout": 5}; !reflect.DeepEqual(got, want) {
		t.Errorf("web tool = %v, want %v (timeout_seconds is timeout; output_select has no effect)", got, want)
	}
	if web.Loop.MaxInFlightExpr != "{{ n | int }}" || web.Policy == nil || !web.Policy.Rules[0].Else {
		t.Errorf("loop %+v, policy %+v", web.Loop, web.Policy)
	}
	if end.Tool["kind"] != "noop" {
		t.Errorf("end = %v, want a noop", end.Tool)
	}
	if len(pb.Warnings) != 1 || !strings.Contains(pb.Warnings[0].Msg, "arc key cond is not NoETL's and is ignored") || pb.Warnings[0].Line != 18 {
		t.Errorf("warnings = %v, want the cond arc", pb.Warnings)
	}

	checkProblems(t, doc("executor: {requires: {tools: [snowflake, pyhton]}, spec: {entry_step: nope, no_next_is_error: true, final_step: end}}\n",
		"  - step: start\n    command: echo hi\n"+
			"  - step: b\n    loop: {cursor: {kind: postgres}, iterator: row, spec: {mode: cursor}}\n    tool: {kind: python, output: {accumulate: {}}}\n"), kinds, []want{
		{4, `executor.requires.tools: tool kind "snowflake" is NoETL's; Millrace does not implement it`, "python tool"},
		{4, `executor.requires.tools: unknown tool kind "pyhton"`, "known kinds"},
		{4, `executor.spec.entry_step names unknown step "nope"`, ""},
		{4, `executor.spec.no_next_is_error: true is NoETL's; Millrace does not implement it`, ""},
		{4, `unsupported NoETL key "final_step" in executor.spec`, "finalization"},
		{6, `step "start" has no tool; NoETL refuses this too`, "tool: {kind: noop}"},
		{7, `unsupported NoETL key "command" in step`, "tool: {kind: shell"},
		{9, `step "b": loop.cursor has no auth`, "postgres credential"},
		{9, `step "b": loop.cursor has no claim`, "__frame_max_rows"},
		{10, `unsupported NoETL key "accumulate" in output`, "do: jump"},
	}, true)
}

func TestPlaybookRetryProblems(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"playbook": {"path"}}
	tool := func(extra string) string {
		return head + "  - step: a\n    tool:\n      kind: playbook\n      path: c\n" + extra
	}
	pb, err := Parse("pb.yaml", []byte(tool("      retry: {max_attempts: 4}\n")), kinds)
	if err != nil {
		t.Fatal(err)
	}
	if r := pb.Steps[0].Policy.Rules[0]; r.Do != DoRetry || r.Attempts != 4 || r.When != "{{ output.status == 'error' and (true) }}" {
		t.Errorf("rule = %+v", r)
	}
	checkProblems(t, tool("      retry: {max_attempts: 2, retry_on: [http_500]}\n"), kinds, []want{
		{11, `retry.retry_on "http_500" is not a condition Millrace knows`, "timeout"},
	}, true)
	checkProblems(t, tool("      retry: {max_attempts: 2}\n      spec: {policy: {rules: [{else: {do: continue}}]}}\n"), kinds, []want{
		{11, `has both retry and spec.policy`, "move it into the policy"},
	}, true)
	checkProblems(t, tool("      retry: 3\n"), kinds, []want{{11, `retry must be a mapping`, "max_attempts"}}, true)
}
