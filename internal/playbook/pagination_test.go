package playbook

import "testing"

// In-step pagination parses as NoETL writes it: iter.* set targets and
// `do: jump` with `to` inside a task list, `do: break` anywhere.
func TestParsePagination(t *testing.T) {
	t.Parallel()
	pb, err := Parse("pb.yaml", []byte(head+`  - step: a
    loop: {in: "{{ [1, 2] }}", iterator: n}
    tool:
      - name: init
        kind: noop
        set: {iter.page: 1}
      - name: fetch
        kind: noop
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' }}"
                then: {do: break}
              - else: {do: continue, set: {iter.more: "{{ iter.page < 3 }}", iter.deep.x: 1}}
      - name: paginate
        kind: noop
        spec:
          policy:
            rules:
              - when: "{{ iter.more }}"
                then: {do: jump, to: fetch, set: {iter.page: "{{ iter.page + 1 }}"}}
              - else:
                  then: {do: continue}
    next: {arcs: [{step: b}]}
  - step: b
    tool:
      kind: noop
      spec: {policy: {rules: [{else: {then: {do: break}}}]}}
`), langKinds)
	if err != nil {
		t.Fatal(err)
	}
	s := pb.ByName["a"]
	if got := s.Tasks[0].Set["iter.page"]; got != 1 {
		t.Errorf("init set iter.page = %v, want 1", got)
	}
	r := s.Tasks[2].Policy.Rules[0]
	if r.Do != DoJump || r.To != "fetch" || r.Set["iter.page"] != "{{ iter.page + 1 }}" {
		t.Errorf("paginate rule = %+v, want a jump to fetch setting iter.page", r)
	}
	if r := s.Tasks[1].Policy.Rules; r[0].Do != DoBreak || r[1].Set["iter.deep.x"] != 1 {
		t.Errorf("fetch rules = %+v, want break, then continue setting iter.more and iter.deep.x", r)
	}
	if r := pb.ByName["b"].Policy.Rules[0]; r.Do != DoBreak {
		t.Errorf("single tool rule = %+v, want break", r)
	}
}

// What jump, to and iter.* cannot mean is refused, with what to write.
func TestParsePaginationProblems(t *testing.T) {
	t.Parallel()
	single := head + "  - step: a\n    tool:\n      kind: noop\n      spec:\n        policy:\n          rules:\n"
	list := head + "  - step: a\n    tool:\n      - name: first\n        kind: noop\n      - name: second\n        kind: noop\n        spec:\n          policy:\n            rules:\n"
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"jump on a single tool", single + "            - else: {do: jump, to: a}\n", []want{{13, "do jump outside a task list", "on a single tool use retry, continue or fail"}}},
		{"iter set on a single tool", single + "            - else: {do: continue, set: {iter.x: 1}}\n", []want{{13, `target "iter.x" is outside a task list`, "here write ctx.<name>"}}},
		{"iter in a step set", head + "  - step: a\n    tool: {kind: noop}\n    set: {iter.x: 1}\n", []want{{9, `step "a": set: target "iter.x" is outside a task list`, "ctx.<name>"}}},
		{"iter in an arc set", head + "  - step: a\n    tool: {kind: noop}\n    next: {arcs: [{step: b, set: {iter.x: 1}}]}\n  - step: b\n    tool: {kind: noop}\n",
			[]want{{9, `next.arcs[0].set: target "iter.x" is outside a task list`, ""}}},
		{"bare iter", list + "            - else: {do: continue, set: {iter: 1}}\n", []want{{16, `target "iter" is reserved`, ""}}},
		{"jump to unknown task", list + "            - else: {do: jump, to: secnd}\n", []want{{16, `task "second": jump to "secnd", which is not a task of this list`, `did you mean "second"?`}}},
		{"jump to far-off name", list + "            - else: {do: jump, to: elsewhere}\n", []want{{16, `jump to "elsewhere"`, "the tasks of this list are: first, second"}}},
		{"jump without to", list + "            - else: {do: jump}\n", []want{{16, "do: jump has no to", "add `to: <task name>`"}}},
		{"to without jump", list + "            - else: {do: continue, to: first}\n", []want{{16, ".to only applies to do: jump", "write `do: jump`"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, tt.src, langKinds, tt.want, false)
		})
	}
}
