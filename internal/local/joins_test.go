package local_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/local"
)

// An inclusive fan-out of n branches (the last one never taken) into one
// reduce step, in the local runtime: reduce is issued once, after every
// live branch's command.completed (docs/playbooks.md, "Fan-out and joins").
func TestLocalJoinRunsOnce(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			b.WriteString("apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: fan, path: t/fan}\nworkflow:\n")
			b.WriteString("  - step: start\n    tool: {kind: noop}\n    next:\n      spec: {mode: inclusive}\n      arcs:\n")
			for i := 1; i <= n+1; i++ {
				fmt.Fprintf(&b, "        - step: b%d\n", i)
				if i == n+1 {
					b.WriteString("          when: \"{{ false }}\"\n")
				}
			}
			for i := 1; i <= n+1; i++ {
				// Staggered, so branches finish one by one, the first last.
				fmt.Fprintf(&b, "  - step: b%d\n    tool: {kind: shell, cmds: [\"sleep 0.%d; echo %d\"]}\n    next: {arcs: [{step: reduce}]}\n", i, n+1-i, i)
			}
			b.WriteString("  - step: reduce\n    tool: {kind: noop, result: \"{{ [")
			for i := 1; i <= n; i++ {
				fmt.Fprintf(&b, "b%d.stdout | trim, ", i)
			}
			fmt.Fprintf(&b, "b%d | default('skipped')] | join(',') }}\"}\n", n+1)
			file := filepath.Join(t.TempDir(), "fan.yaml")
			if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var evs []api.Event
			ctx := t.Context()
			ex, err := local.Run(ctx, file, nil, local.Options{Progress: func(e api.Event) {
				mu.Lock()
				evs = append(evs, e)
				mu.Unlock()
			}})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := 1; i <= n; i++ {
				want = append(want, fmt.Sprint(i))
			}
			want = append(want, "skipped")
			if ex.Status != api.ExecCompleted || string(ex.Result) != fmt.Sprintf("%q", strings.Join(want, ",")) {
				t.Fatalf("execution %s %s (%s); want completed with every live branch's output", ex.Status, ex.Result, ex.Error)
			}
			mu.Lock()
			defer mu.Unlock()
			issued, done := -1, map[string]int{}
			for i, e := range evs {
				switch {
				case e.EventType == api.EvCommandIssued && e.Step == "reduce":
					if issued >= 0 {
						t.Fatalf("reduce issued twice")
					}
					issued = i
				case e.EventType == api.EvCommandIssued && e.Step == fmt.Sprintf("b%d", n+1):
					t.Fatalf("the never-taken branch was issued")
				case e.EventType == api.EvCommandCompleted:
					done[e.Step] = i
				}
			}
			for i := 1; i <= n; i++ {
				if d, ok := done[fmt.Sprintf("b%d", i)]; !ok || d > issued {
					t.Errorf("reduce issued at event %d, b%d completed at %d", issued, i, d)
				}
			}
		})
	}
}

// The shape of NoETL's own fan-out/reduce fixture: python steps with
// def main, an inclusive start, branches whose exclusive arcs are guarded
// on call.done, and a reduce step reading both branches by name.
func TestLocalJoinNoETLFanOutReduce(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "fanout_reduce.yaml")
	src := `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: fanout_reduce, path: t/fanout_reduce}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        def main():
            return {"status": "ok"}
    next:
      spec: {mode: inclusive}
      arcs:
        - {step: normalize_customer, when: "{{ event.name == 'call.done' }}"}
        - {step: enrich_customer, when: "{{ event.name == 'call.done' }}"}
  - step: normalize_customer
    tool:
      kind: python
      code: |
        def main():
            return {"normalized": True}
    next:
      spec: {mode: exclusive}
      arcs: [{step: reduce_customer, when: "{{ event.name == 'call.done' }}"}]
  - step: enrich_customer
    tool:
      kind: python
      code: |
        import time
        def main():
            time.sleep(0.3)
            return {"enriched": True}
    next:
      spec: {mode: exclusive}
      arcs: [{step: reduce_customer, when: "{{ event.name == 'call.done' }}"}]
  - step: reduce_customer
    tool:
      kind: python
      input:
        normalized: "{{ normalize_customer.normalized }}"
        enriched: "{{ enrich_customer.enriched }}"
      code: |
        def main(normalized, enriched):
            return {"reduced": normalized and enriched}
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	issued := 0
	var mu sync.Mutex
	ex, err := local.Run(t.Context(), file, nil, local.Options{Progress: func(e api.Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.EventType == api.EvCommandIssued && e.Step == "reduce_customer" {
			issued++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != api.ExecCompleted || string(ex.Result) != `{"reduced":true}` {
		t.Fatalf("execution %s %s (%s); want completed with reduced true", ex.Status, ex.Result, ex.Error)
	}
	mu.Lock()
	defer mu.Unlock()
	if issued != 1 {
		t.Fatalf("reduce_customer issued %d times, want once", issued)
	}
}
