package playbook

import (
	"errors"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/bus"
)

const poolBook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: pools
  path: tests/pools
workflow:
  - step: start
    pool: gpu
    tool: {kind: python, code: "result = 1"}
    next:
      arcs: [{step: tasks}]
  - step: tasks
    pool: etl-2
    tool:
      - name: a
        kind: python
        code: "result = 2"
    next:
      arcs: [{step: plain}]
  - step: plain
    tool: {kind: python, code: "result = 3"}
`

func TestPoolParses(t *testing.T) {
	t.Parallel()
	pb, err := Parse("pools.yaml", []byte(poolBook), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	for step, want := range map[string]string{"start": "gpu", "tasks": "etl-2", "plain": ""} {
		if got := pb.ByName[step].Pool; got != want {
			t.Errorf("step %s: pool %q, want %q", step, got, want)
		}
	}
}

func TestPoolProblems(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxPoolName+1)
	for _, tc := range []struct {
		name, value, msg, hint string
	}{
		{"upper case", "GPU", `step "start": invalid pool name "GPU" (it must match ` + PoolNamePattern + `)`, "DNS label"},
		{"underscore", "gpu_a", `invalid pool name "gpu_a"`, "lower-case letters, digits and '-'"},
		{"dot", "gpu.a", `invalid pool name "gpu.a"`, ""},
		{"leading dash", "-gpu", `invalid pool name "-gpu"`, ""},
		{"trailing dash", "gpu-", `invalid pool name "gpu-"`, ""},
		{"template", `"{{ workload.pool }}"`, `invalid pool name "{{ workload.pool }}"`, "literal name, not a template"},
		{"too long", long, `pool name "` + long + `" is 64 characters long; at most 63`, "DNS label"},
		{"empty", `""`, `invalid pool name ""`, ""},
		{"null", "null", `step "start": pool must be a name, got an empty value`, "pool: gpu"},
		{"list", "[gpu]", `step "start": pool must be a name, got a list`, "pool: gpu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := strings.Replace(poolBook, "pool: gpu", "pool: "+tc.value, 1)
			_, err := Parse("pools.yaml", []byte(src), testKinds)
			var probs Problems
			if !errors.As(err, &probs) || len(probs) != 1 {
				t.Fatalf("Parse = %v, want one problem", err)
			}
			p := probs[0]
			// The value of `pool:` on line 8, column 11.
			if p.File != "pools.yaml" || p.Line != 8 || p.Col != 11 {
				t.Errorf("problem at %s:%d:%d, want pools.yaml:8:11", p.File, p.Line, p.Col)
			}
			if !strings.Contains(p.Msg, tc.msg) || !strings.Contains(p.Hint, tc.hint) {
				t.Errorf("problem %q (hint %q), want %q (hint containing %q)", p.Msg, p.Hint, tc.msg, tc.hint)
			}
			if !strings.HasPrefix(p.Error(), "pools.yaml:8:11") {
				t.Errorf("Error() = %q, want it to start with pools.yaml:8:11", p.Error())
			}
		})
	}
}

// The parser and the worker (bus.CheckPool, MILLRACE_WORKER_POOL) must
// agree on what a pool name is, or a step could be routed to a pool no
// worker can be started for.
func TestPoolRuleMatchesBus(t *testing.T) {
	t.Parallel()
	if PoolNamePattern != bus.PoolNamePattern || MaxPoolName != bus.MaxPoolName {
		t.Fatalf("playbook rule %s (max %d) differs from bus %s (max %d)", PoolNamePattern, MaxPoolName, bus.PoolNamePattern, bus.MaxPoolName)
	}
	for _, name := range []string{"gpu", "a", "0-x", "GPU", "gpu_a", "-a", "a-", "a.b", strings.Repeat("b", 63), strings.Repeat("b", 64)} {
		src := strings.Replace(poolBook, "pool: gpu", "pool: "+name, 1)
		_, perr := Parse("pools.yaml", []byte(src), testKinds)
		berr := bus.CheckPool(name)
		if (perr == nil) != (berr == nil) {
			t.Errorf("pool %q: playbook says %v, bus says %v", name, perr, berr)
		}
	}
}

// `pool` written inside a tool or a task is not routing: the problem says
// where it belongs.
func TestPoolInsideToolSaysWhereItBelongs(t *testing.T) {
	t.Parallel()
	src := strings.Replace(poolBook, "        code: \"result = 2\"\n", "        code: \"result = 2\"\n        pool: gpu\n", 1)
	_, err := Parse("pools.yaml", []byte(src), testKinds)
	var probs Problems
	if !errors.As(err, &probs) || len(probs) != 1 {
		t.Fatalf("Parse = %v, want one problem", err)
	}
	if p := probs[0]; p.Line != 18 || !strings.Contains(p.Msg, `unknown key "pool"`) || !strings.Contains(p.Hint, "write it on the step, beside `tool`") {
		t.Errorf("problem %s, want line 18, unknown key \"pool\" with a hint saying it goes on the step", p.Error())
	}
}
