package flow_test

// Joins as the server drives them (docs/playbooks.md, "Fan-out and
// joins"): a step several branches lead to is issued once, after every
// live branch has finished.

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/tools"
)

// fanOut is a playbook whose start forks inclusively into n branches
// b1..bn that all lead to reduce; the branches named in skip have an arc
// whose when is false.
func fanOut(n int, skip ...string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: fan, path: tests/fan}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs:
`)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "        - step: b%d\n", i)
		if slices.Contains(skip, fmt.Sprintf("b%d", i)) {
			b.WriteString("          when: \"{{ false }}\"\n")
		}
	}
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  - step: b%d\n    tool: {kind: noop}\n    next:\n      arcs: [{step: reduce}]\n", i)
	}
	b.WriteString("  - step: reduce\n    tool:\n      kind: noop\n      result:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "        b%d: \"{{ b%d | default('none') }}\"\n", i, i)
	}
	return b.String()
}

// events is the execution's event log.
func (r *route) events() []store.Event {
	r.t.Helper()
	evs, err := store.ReadValue(r.ctx, r.st, func(q store.Querier) ([]store.Event, error) {
		return q.EventList(r.ctx, r.ex.ExecutionID)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return evs
}

// wantJoinOnce checks that the event log has exactly one command.issued for
// join, after the command.completed of every step in after.
func (r *route) wantJoinOnce(join string, after ...string) {
	r.t.Helper()
	evs := r.events()
	issued := -1
	for i, ev := range evs {
		if ev.EventType == api.EvCommandIssued && ev.Step == join {
			if issued >= 0 {
				r.t.Fatalf("%s issued twice (events %d and %d)", join, issued, i)
			}
			issued = i
		}
	}
	if issued < 0 {
		r.t.Fatalf("%s never issued", join)
	}
	for _, step := range after {
		done := slices.IndexFunc(evs, func(ev store.Event) bool { return ev.EventType == api.EvCommandCompleted && ev.Step == step })
		if done < 0 || done > issued {
			r.t.Errorf("%s issued at event %d, before %s completed (event %d)", join, issued, step, done)
		}
	}
}

// notIssued fails if step has been issued.
func (r *route) notIssued(step, when string) {
	r.t.Helper()
	for _, ev := range r.events() {
		if ev.EventType == api.EvCommandIssued && ev.Step == step {
			r.t.Fatalf("%s: %s already issued", when, step)
		}
	}
}

func TestJoinInclusiveFanOut(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			r := startRoute(t, fanOut(n))
			r.report("start", api.EvCommandCompleted, nil, "")
			var branches []string
			for i := n; i >= 1; i-- { // the last branch finishes first
				b := fmt.Sprintf("b%d", i)
				if i == 1 {
					r.notIssued("reduce", "with one branch left")
				}
				r.report(b, api.EvCommandCompleted, "r"+b, "")
				branches = append(branches, b)
			}
			r.wantJoinOnce("reduce", branches...)
			// The join sees every branch's result by step name.
			res := r.tool("reduce")["result"].(map[string]any)
			for _, b := range branches {
				if res[b] != "r"+b {
					t.Errorf("reduce reads %s = %v, want r%s", b, res[b], b)
				}
			}
			r.report("reduce", api.EvCommandCompleted, "reduced", "")
			if ex := r.execution(); ex.Status != api.ExecCompleted || string(ex.Result) != `"reduced"` {
				t.Errorf("execution %s with result %s; want completed with reduce's result", ex.Status, ex.Result)
			}
		})
	}
}

func TestJoinSkippedBranch(t *testing.T) {
	t.Parallel()
	r := startRoute(t, fanOut(3, "b2"))
	r.report("start", api.EvCommandCompleted, nil, "")
	if _, steps := r.open(); steps != "b1,b3" {
		t.Fatalf("open %q, want b1,b3", steps)
	}
	r.report("b1", api.EvCommandCompleted, "rb1", "")
	r.notIssued("reduce", "with b3 running")
	r.report("b3", api.EvCommandCompleted, "rb3", "")
	r.wantJoinOnce("reduce", "b1", "b3")
	if got := r.tool("reduce")["result"].(map[string]any)["b2"]; got != "none" {
		t.Errorf("reduce reads the skipped b2 as %v, want it undefined (none by default)", got)
	}
}

// A step two arcs of an exclusive choice lead to never waits: only one of
// them can be live.
func TestJoinAfterExclusiveChoice(t *testing.T) {
	t.Parallel()
	r := startRoute(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: choice, path: tests/choice}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      arcs:
        - {step: a, when: "{{ start == 1 }}"}
        - {step: b}
  - step: a
    tool: {kind: noop}
    next: {arcs: [{step: end}]}
  - step: b
    tool: {kind: noop}
    next: {arcs: [{step: end}]}
  - step: end
    tool: {kind: noop}
`)
	r.report("start", api.EvCommandCompleted, 1, "")
	r.report("a", api.EvCommandCompleted, nil, "")
	r.wantJoinOnce("end", "a")
}

// A branch that ends elsewhere stops holding the join back when it ends,
// though none of its arcs leads there; a longer branch holds it until its
// last step.
func TestJoinBranchEndsElsewhere(t *testing.T) {
	t.Parallel()
	r := startRoute(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: elsewhere, path: tests/elsewhere}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs: [{step: a}, {step: b}, {step: c}]
  - step: a
    tool: {kind: noop}
    next: {arcs: [{step: reduce}]}
  - step: b
    tool: {kind: noop}
    next:
      arcs:
        - {step: reduce, when: "{{ b == 'join' }}"}
        - {step: aside}
  - step: c
    tool: {kind: noop}
    next: {arcs: [{step: c2}]}
  - step: c2
    tool: {kind: noop}
    next: {arcs: [{step: reduce}]}
  - step: aside
    tool: {kind: noop}
  - step: reduce
    tool: {kind: noop}
`)
	r.report("start", api.EvCommandCompleted, nil, "")
	r.report("a", api.EvCommandCompleted, nil, "")
	r.report("c", api.EvCommandCompleted, nil, "")
	r.notIssued("reduce", "with b and c2 running")
	r.report("b", api.EvCommandCompleted, "no", "")
	r.notIssued("reduce", "with c2 running")
	r.report("c2", api.EvCommandCompleted, nil, "")
	r.wantJoinOnce("reduce", "a", "b", "c2")
	r.report("aside", api.EvCommandCompleted, nil, "")
	r.report("reduce", api.EvCommandCompleted, nil, "")
	if ex := r.execution(); ex.Status != api.ExecCompleted {
		t.Errorf("execution %s (%s), want completed", ex.Status, ex.Error)
	}
}

// Retries and loops inside a branch hold the join back until the branch's
// step is over; a branch that fails fails the execution and the join never
// runs.
func TestJoinRetryAndLoopInBranch(t *testing.T) {
	t.Parallel()
	src := `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: busy, path: tests/busy}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs: [{step: flaky}, {step: each}]
  - step: flaky
    tool:
      kind: noop
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: retry, attempts: 2, delay: 0}
    next: {arcs: [{step: reduce}]}
  - step: each
    loop: {in: "{{ [1, 2] }}", iterator: x}
    tool: {kind: noop}
    next: {arcs: [{step: reduce}]}
  - step: reduce
    tool: {kind: noop}
`
	r := startRoute(t, src)
	r.report("start", api.EvCommandCompleted, nil, "")
	r.report("flaky", api.EvCommandFailed, nil, "boom")
	r.report("each", api.EvCommandCompleted, 1, "")
	r.report("each", api.EvCommandCompleted, 2, "")
	r.notIssued("reduce", "with flaky's retry pending")
	r.report("flaky", api.EvCommandCompleted, "ok", "")
	r.wantJoinOnce("reduce", "flaky", "each")

	r = startRoute(t, src)
	r.report("start", api.EvCommandCompleted, nil, "")
	r.report("each", api.EvCommandCompleted, 1, "")
	r.report("flaky", api.EvCommandFailed, nil, "boom")
	r.report("flaky", api.EvCommandFailed, nil, "boom")
	r.wantFailed("step flaky failed")
	r.notIssued("reduce", "after a failed branch")
}

// What a join waits for is read from the store, not from one server's
// memory: a second service on the same database (a restart, or another
// server) finishes the other branch and issues the join once.
func TestJoinAcrossServices(t *testing.T) {
	t.Parallel()
	r := startRoute(t, fanOut(3))
	r.report("start", api.EvCommandCompleted, nil, "")
	r.report("b1", api.EvCommandCompleted, nil, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	other := flow.New(r.st, ids.New(-1), flow.Config{LeaseTTL: time.Minute}, tools.Kinds(), log, func() {})
	first := r.flow
	r.flow = other
	r.report("b2", api.EvCommandCompleted, nil, "")
	r.notIssued("reduce", "with b3 running")
	r.flow = first // its cached state is stale now: it must not be used
	r.report("b3", api.EvCommandCompleted, nil, "")
	r.wantJoinOnce("reduce", "b1", "b2", "b3")
}

// A join that loops starts its loop once, and an arc's set into a join is
// applied when that arc fires.
func TestJoinThatLoops(t *testing.T) {
	t.Parallel()
	r := startRoute(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: loopjoin, path: tests/loopjoin}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs: [{step: a}, {step: b}]
  - step: a
    tool: {kind: noop}
    next: {arcs: [{step: reduce, set: {ctx.from_a: "{{ a }}"}}]}
  - step: b
    tool: {kind: noop}
    next: {arcs: [{step: reduce}]}
  - step: reduce
    loop: {in: "{{ [a, b] }}", iterator: x}
    tool: {kind: noop, result: "{{ x }}-{{ from_a }}"}
`)
	r.report("start", api.EvCommandCompleted, nil, "")
	r.report("a", api.EvCommandCompleted, "A", "")
	r.notIssued("reduce", "with b running")
	r.report("b", api.EvCommandCompleted, "B", "")
	started := 0
	for _, ev := range r.events() {
		if ev.EventType == api.EvLoopStarted && ev.Step == "reduce" {
			started++
		}
	}
	if started != 1 {
		t.Fatalf("reduce's loop started %d times, want once", started)
	}
	if got := r.tool("reduce")["result"]; got != "A-A" {
		t.Errorf("first iteration renders %v, want A-A (the item, and the context a's arc set)", got)
	}
	r.report("reduce", api.EvCommandCompleted, "A-A", "")
	r.report("reduce", api.EvCommandCompleted, "B-A", "")
	if ex := r.execution(); ex.Status != api.ExecCompleted || string(ex.Result) != `["A-A","B-A"]` {
		t.Errorf("execution %s %s (%s); want completed with the loop's results", ex.Status, ex.Result, ex.Error)
	}
}

// Random shapes: n branches of random length, some never taken, finishing
// in a random order; reduce is issued once, after every live branch's last
// step, and never while one runs.
func TestJoinRandomShapes(t *testing.T) {
	t.Parallel()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for iter := range 15 {
		n := 2 + rng.IntN(4)
		var b strings.Builder
		b.WriteString("apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: r, path: tests/r}\nworkflow:\n")
		b.WriteString("  - step: start\n    tool: {kind: noop}\n    next:\n      spec: {mode: inclusive}\n      arcs:\n")
		live := map[string][]string{} // branch -> its steps in order
		taken := 0
		for i := range n {
			fmt.Fprintf(&b, "        - step: b%d_0\n", i)
			if rng.IntN(4) == 0 && (taken > 0 || i < n-1) {
				b.WriteString("          when: \"{{ false }}\"\n")
				continue
			}
			taken++
			live[fmt.Sprint(i)] = nil
		}
		for i := range n {
			steps := 1 + rng.IntN(3)
			for k := range steps {
				name := fmt.Sprintf("b%d_%d", i, k)
				next := "reduce"
				if k < steps-1 {
					next = fmt.Sprintf("b%d_%d", i, k+1)
				}
				fmt.Fprintf(&b, "  - step: %s\n    tool: {kind: noop}\n    next: {arcs: [{step: %s}]}\n", name, next)
				if _, ok := live[fmt.Sprint(i)]; ok {
					live[fmt.Sprint(i)] = append(live[fmt.Sprint(i)], name)
				}
			}
		}
		b.WriteString("  - step: reduce\n    tool: {kind: noop}\n")
		t.Logf("seed %d, iteration %d:\n%s", seed, iter, b.String())
		r := startRoute(t, b.String())
		r.report("start", api.EvCommandCompleted, nil, "")
		var lasts []string
		for len(live) > 0 {
			if _, steps := r.open(); strings.Contains(steps, "reduce") {
				t.Fatalf("seed %d: reduce issued with branches running (open %q)", seed, steps)
			}
			keys := slices.Sorted(maps.Keys(live))
			k := keys[rng.IntN(len(keys))]
			step := live[k][0]
			r.report(step, api.EvCommandCompleted, nil, "")
			if live[k] = live[k][1:]; len(live[k]) == 0 {
				delete(live, k)
				lasts = append(lasts, step)
			}
		}
		r.wantJoinOnce("reduce", lasts...)
		r.report("reduce", api.EvCommandCompleted, nil, "")
		if ex := r.execution(); ex.Status != api.ExecCompleted {
			t.Fatalf("seed %d: execution %s (%s), want completed", seed, ex.Status, ex.Error)
		}
	}
}

// Cancelled while a join waits: the branch still running may report (or be
// refused), but the join is never issued and the execution stays cancelled.
func TestJoinCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	r := startRoute(t, fanOut(2))
	r.report("start", api.EvCommandCompleted, nil, "")
	r.report("b2", api.EvCommandCompleted, "rb2", "")
	byStep, _ := r.open()
	b1 := byStep["b1"]
	claimed, err := r.flow.ClaimAndStart(r.ctx, b1.EventID, "w1", r.ex.ExecutionID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.flow.Cancel(r.ctx, r.ex.ExecutionID); err != nil {
		t.Fatal(err)
	}
	_, _ = r.flow.Apply(r.ctx, flow.Report{EventType: api.EvCommandCompleted, EventID: b1.EventID, WorkerID: "w1",
		Attempt: claimed.Attempt, Result: []byte(`"rb1"`), ExecutionID: r.ex.ExecutionID})
	r.notIssued("reduce", "after cancel")
	if ex := r.execution(); ex.Status != api.ExecCancelled {
		t.Fatalf("execution %s, want cancelled", ex.Status)
	}
}
