package flow_test

import (
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

const routedBook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: routed, path: r/routed}
workflow:
  - step: start
    pool: gpu
    tool: {kind: noop}
    next: {arcs: [{step: after}]}
  - step: after
    tool: {kind: noop}
`

func (p *recorder) subjects() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.got {
		out = append(out, m.Subject)
	}
	return out
}

// A step with `pool:` is notified on its pool's subject when it is issued,
// when the reaper re-notifies it and when a worker releases it; the step
// after it, without a pool, goes to the default subject.
func TestRoutedStepKeepsItsPool(t *testing.T) {
	t.Parallel()
	b := setup(t, 3*time.Second)
	ctx := t.Context()
	b.Start(t)
	if _, err := b.Flow.Register(ctx, routedBook); err != nil {
		t.Fatal(err)
	}
	ex, err := b.Flow.Execute(ctx, "r/routed", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	gpu := bus.PoolSubject(bus.DefaultSubject, "gpu")
	wait.Until(t, 10*time.Second, "the first notification", func() bool { return len(b.pub.subjects()) == 1 })
	cmds, err := store.ReadValue(ctx, b.Store, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(ctx, ex.ExecutionID)
	})
	if err != nil || len(cmds) != 1 || cmds[0].Pool != "gpu" {
		t.Fatalf("commands = %+v, %v; want one with pool gpu", cmds, err)
	}
	start := cmds[0]

	// Unclaimed: the reaper re-notifies it on the pool's subject.
	wait.Until(t, 10*time.Second, "the unclaimed command to be re-notified", func() bool {
		n, err := b.reaper.ReapOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	wait.Until(t, 10*time.Second, "the re-notification", func() bool { return len(b.pub.subjects()) == 2 })

	// Claimed, then released (a worker shutting down): at once, same pool.
	cl, err := b.Flow.Claim(ctx, start.EventID, "w1", ex.ExecutionID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flow.Release(ctx, start.EventID, "w1", cl.Attempt, 0); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the release's notification", func() bool { return len(b.pub.subjects()) == 3 })

	// Another worker of the pool finishes it; the next step has no pool.
	cl, err = b.Flow.Claim(ctx, start.EventID, "w2", ex.ExecutionID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Flow.Apply(ctx, flow.Report{EventType: api.EvCommandCompleted, EventID: start.EventID, WorkerID: "w2", Attempt: cl.Attempt, ExecutionID: ex.ExecutionID}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the next step's notification", func() bool { return len(b.pub.subjects()) == 4 })
	want := []string{gpu, gpu, gpu, bus.DefaultSubject}
	got := b.pub.subjects()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("subjects %q, want %q", got, want)
		}
	}
}
