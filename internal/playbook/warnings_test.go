package playbook

import (
	"strings"
	"testing"
)

// NoETL runs a playbook with a step no arc leads to (the step never runs),
// so Millrace accepts it too and reports the step as a warning.
func TestUnreachableStepIsWarning(t *testing.T) {
	t.Parallel()
	step := func(name string) string { return "  - step: " + name + "\n    tool: {kind: python}\n" }
	for _, tt := range []struct {
		name, src string
		want      []want
	}{
		{"after the start", head + step("a") + step("b") + step("c"), []want{
			{9, `step "b" is unreachable from start step "a" and never runs`, "add an arc"}, {11, `step "c" is unreachable`, ""},
		}},
		{"before a named start", head + step("a") + step("start"), []want{{7, `step "a" is unreachable from start step "start"`, ""}}},
		{"beside a guarded cycle", head + step("a") + "    next: {arcs: [{step: a, when: '{{ x }}'}]}\n" + step("b"), []want{{10, `step "b" is unreachable`, ""}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pb, err := Parse("pb.yaml", []byte(tt.src), testKinds)
			if err != nil {
				t.Fatalf("Parse: %v; an unreachable step must not refuse the playbook", err)
			}
			if len(pb.Warnings) != len(tt.want) {
				t.Fatalf("warnings = %v, want %d", pb.Warnings, len(tt.want))
			}
			for i, w := range tt.want {
				p := pb.Warnings[i]
				if !p.Warning || p.Line != w.line || p.Col == 0 || !strings.Contains(p.Msg, w.msg) || !strings.Contains(p.Hint, w.hint) ||
					!strings.Contains(p.Error(), "pb.yaml:") || !strings.Contains(p.Error(), ": warning: ") {
					t.Errorf("warning %d = %q, want line %d, %q, hint %q", i, p.Error(), w.line, w.msg, w.hint)
				}
			}
		})
	}
	pb, err := Parse("pb.yaml", []byte(head+step("a")), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	if len(pb.Warnings) != 0 {
		t.Fatalf("a reachable playbook has warnings %v", pb.Warnings)
	}
}

// NoETL checks spec.policy.admit but never enforces it: Millrace accepts it,
// runs the step, and warns.
func TestAdmitIsWarning(t *testing.T) {
	t.Parallel()
	src := head + "  - step: a\n    spec:\n      policy:\n        admit:\n          mode: exclusive\n          rules:\n            - when: '{{ x }}'\n              then: {allow: true}\n    tool: {kind: python}\n"
	pb, err := Parse("pb.yaml", []byte(src), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	if len(pb.Warnings) != 1 || pb.Warnings[0].Line != 10 || !strings.Contains(pb.Warnings[0].Msg, "spec.policy.admit is not applied") {
		t.Fatalf("warnings = %v", pb.Warnings)
	}
	checkProblems(t, head+"  - step: a\n    spec: {policy: {admit: {rules: x}}}\n    tool: {kind: python}\n", testKinds, []want{
		{8, "admit.rules must be a list", "rules:"},
	}, true)
	checkProblems(t, head+"  - step: a\n    spec: {policy: {admit: {rules: []}, lifecycle: {}}}\n    tool: {kind: python}\n", testKinds, []want{
		{8, `unsupported NoETL key "spec" in step (holding policy.lifecycle)`, "under the tool"},
	}, true)
}
