package playbook

import "testing"

func TestAliasPairsRefused(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"http": {"method", "url", "endpoint", "body", "json", "payload", "data"}}
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: http\n      url: http://x\n      endpoint: http://y\n",
		kinds, []want{{11, `has both "url" (line 10) and "endpoint", which say the same thing`, `"endpoint" is an alias of "url"`}}, true)
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: http\n      url: http://x\n      json: {a: 1}\n      data: {b: 2}\n",
		kinds, []want{{12, `has both "json" (line 11) and "data", which say the same thing`, "keep one of json, data"}}, true)
	if _, err := Parse("pb.yaml", []byte(head+"  - step: a\n    tool: {kind: http, endpoint: http://x, payload: {a: 1}}\n"), kinds); err != nil {
		t.Fatalf("endpoint with payload: %v", err)
	}
}

func TestBackoffLinearAndNone(t *testing.T) {
	t.Parallel()
	for _, b := range []string{"linear", "none", "fixed", "exponential"} {
		src := head + "  - step: a\n    tool:\n      kind: http\n      url: http://x\n      spec:\n        policy:\n          rules:\n            - else:\n                then: {do: retry, backoff: " + b + ", delay: 1}\n"
		pb, err := Parse("pb.yaml", []byte(src), testKinds)
		if err != nil {
			t.Fatalf("backoff %s: %v", b, err)
		}
		if got := pb.Steps[0].Policy.Rules[0].Backoff; got != b {
			t.Fatalf("backoff %s parsed as %q", b, got)
		}
	}
	checkProblems(t, head+"  - step: a\n    tool:\n      kind: http\n      url: http://x\n      spec:\n        policy:\n          rules:\n            - else:\n                then: {do: retry, backoff: cubic}\n",
		testKinds, []want{{15, `backoff "cubic" is unknown`, "linear"}}, true)
}

func TestPlaybookPayloadIsInput(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"playbook": {"path", "input", "payload", "timeout"}}
	pb, err := Parse("pb.yaml", []byte(head+"  - step: a\n    input: {x: 1}\n    tool: {kind: playbook, path: c, payload: {y: 2}}\n"), kinds)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := pb.Steps[0].Tool["input"].(map[string]any)
	if _, has := pb.Steps[0].Tool["payload"]; has || in["x"] == nil || in["y"] == nil {
		t.Fatalf("tool = %#v, want payload merged with the step's input as input", pb.Steps[0].Tool)
	}
	checkProblems(t, head+"  - step: a\n    tool: {kind: playbook, path: c, input: {}, payload: {}}\n",
		kinds, []want{{8, `has both "input" (line 8) and "payload", which say the same thing`, `"payload" is an alias of "input"`}}, false)
}

func TestLoopPolicyExec(t *testing.T) {
	t.Parallel()
	loop := func(spec string) string {
		return head + "  - step: a\n    loop:\n      in: \"{{ [1, 2] }}\"\n      spec: " + spec + "\n    tool: {kind: python}\n"
	}
	for spec, want := range map[string]string{
		"{mode: parallel}":                        "distributed",
		"{policy: {exec: distributed}}":           "distributed",
		"{policy: {exec: local}, mode: parallel}": "local",
	} {
		pb, err := Parse("pb.yaml", []byte(loop(spec)), testKinds)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if got := pb.Steps[0].Loop.Exec; got != want {
			t.Errorf("%s: exec = %q, want %q", spec, got, want)
		}
	}
	checkProblems(t, loop("{policy: {exec: remote}}"), testKinds, []want{{10, `unknown loop.spec.policy.exec "remote"`, "distributed or local"}}, true)
	checkProblems(t, loop("{policy: {exec: local, fanout: 3}}"), testKinds, []want{{10, `unknown key "fanout" in loop.spec.policy`, ""}}, true)
}

func TestWorkbookEntryAssert(t *testing.T) {
	t.Parallel()
	kinds := KindSet{"python": {"code", "input"}}
	wb := func(entry string) string {
		return "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\nworkbook:\n" + entry +
			"workflow:\n  - step: a\n    tool: {kind: workbook, name: score, input: {x: 1}}\n"
	}
	pb, err := Parse("pb.yaml", []byte(wb("  - name: score\n    assert: {expects: [x], returns: [score]}\n    tool: {kind: python, input: {x: null}, code: 'result = {\"score\": x}'}\n")), kinds)
	if err != nil {
		t.Fatal(err)
	}
	if got := pb.Steps[0].Assert; got == nil || len(got.Expects) != 1 || got.Expects[0] != "x" || got.Returns[0] != "score" {
		t.Fatalf("assert = %+v, want the entry's", got)
	}
	checkProblems(t, wb("  - name: score\n    assert: {expects: [x]}\n    tool: {kind: python, code: x, assert: {expects: [x]}}\n"),
		kinds, []want{{6, `assert is given both on the entry and in its tool`, "keep one"}}, true)
}
