package flow_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/flow/flowtest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// recorder stands in for NATS and records what the relay published.
type recorder struct {
	mu  sync.Mutex
	got []bus.OutMsg
}

func (p *recorder) PublishBatch(_ context.Context, msgs []bus.OutMsg) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, msgs...)
	return make([]error, len(msgs))
}

func (p *recorder) msgIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.got {
		out = append(out, m.MsgID)
	}
	return out
}

type bundle struct {
	*flowtest.Stack
	pub    *recorder
	reaper *flow.Reaper
}

func setup(t *testing.T, redeliverAfter time.Duration) *bundle {
	t.Helper()
	pub := &recorder{}
	b := &bundle{Stack: flowtest.New(t, pub), pub: pub}
	b.reaper = b.Flow.NewReaper(flow.ReaperConfig{Interval: time.Hour, RedeliverAfter: redeliverAfter})
	return b
}

func TestReaperRenotifiesUnclaimedAndExpired(t *testing.T) {
	t.Parallel()
	// "At once" must hold on a loaded machine: draining the outbox took
	// more than 300 ms there (CI with four test binaries on two cores), so
	// the redelivery delay is well above any drain; the lease (1 s) still
	// expires first, which the expired-lease half relies on.
	b := setup(t, 3*time.Second)
	ctx := t.Context()
	b.Start(t)
	if _, err := b.Flow.Register(ctx, flowtest.OneStep); err != nil {
		t.Fatal(err)
	}
	ex, err := b.Flow.Execute(ctx, flowtest.OneStepPath, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the first notification", func() bool { return len(b.pub.msgIDs()) == 1 })
	cmdID := b.pub.msgIDs()[0]

	// Nobody claimed it (the message was "lost"): re-notified with a new
	// message id, or JetStream's duplicate window would drop it.
	wait.Until(t, 10*time.Second, "the unclaimed command to be re-notified", func() bool {
		n, err := b.reaper.ReapOnce(ctx)
		if err != nil || n > 1 {
			t.Fatalf("ReapOnce = %d, %v; want 1", n, err)
		}
		return n == 1
	})
	wait.Until(t, 10*time.Second, "the re-notification", func() bool { return len(b.pub.msgIDs()) == 2 })
	if got := b.pub.msgIDs()[1]; got != cmdID+"#2" {
		t.Fatalf("re-notification msg id %q, want %q", got, cmdID+"#2")
	}
	// Freshly re-notified: not due again yet.
	if n, _ := b.reaper.ReapOnce(ctx); n != 0 {
		t.Fatalf("re-notified %d commands right after a re-notification", n)
	}

	// A claim whose lease expires is re-notified once per expiry.
	cmds, _ := store.ReadValue(ctx, b.Store, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(ctx, ex.ExecutionID)
	})
	if _, err := b.Flow.Claim(ctx, cmds[0].EventID, "w1", 0, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.reaper.ReapOnce(ctx); n != 0 {
		t.Fatalf("re-notified %d commands under a live lease", n)
	}
	wait.Until(t, 10*time.Second, "the expired lease to be re-notified", func() bool { // the lease is 1 s
		n, _ := b.reaper.ReapOnce(ctx)
		return n == 1
	})
	wait.Until(t, 10*time.Second, "the outbox to drain", func() bool { return b.OutboxDepth(t) == 0 })
	if n, _ := b.reaper.ReapOnce(ctx); n != 0 {
		t.Fatalf("expired lease re-notified again at once (%d)", n)
	}
	// The next worker gets attempt 2.
	cl, err := b.Flow.Claim(ctx, cmds[0].EventID, "w2", 0, 0)
	if err != nil || cl.Attempt != 2 {
		t.Fatalf("claim after expiry = %+v, %v; want attempt 2", cl, err)
	}
}
