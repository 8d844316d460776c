package relay_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow/flowtest"
	"github.com/millrace/millrace/internal/wait"
)

// faultyPublisher fails while down is set and records what it accepted.
// A fake is right here: the point is to inject NATS failures on demand.
type faultyPublisher struct {
	mu     sync.Mutex
	down   bool
	failed int // rounds refused
	got    []bus.OutMsg
}

func (p *faultyPublisher) failedRounds() int { p.mu.Lock(); defer p.mu.Unlock(); return p.failed }

func (p *faultyPublisher) PublishBatch(_ context.Context, msgs []bus.OutMsg) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(msgs))
	if p.down {
		p.failed++
	}
	for i, m := range msgs {
		if p.down {
			errs[i] = errors.New("nats: no responders available for request")
			continue
		}
		p.got = append(p.got, m)
	}
	return errs
}

func (p *faultyPublisher) set(down bool) { p.mu.Lock(); p.down = down; p.mu.Unlock() }

func (p *faultyPublisher) msgIDs() []string {
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
	pub *faultyPublisher
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pub := &faultyPublisher{}
	return &bundle{Stack: flowtest.New(t, pub), pub: pub}
}

func TestOutboxSurvivesPublishFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.pub.set(true)
	b.Start(t)
	if _, err := b.Flow.Register(ctx, flowtest.OneStep); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := b.Flow.Execute(ctx, flowtest.OneStepPath, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	// While NATS refuses, every notification stays in the outbox.
	wait.Until(t, 10*time.Second, "several refused publish rounds", func() bool { return b.pub.failedRounds() >= 3 })
	if d := b.OutboxDepth(t); d != 5 {
		t.Fatalf("outbox depth %d while NATS is down, want 5", d)
	}
	b.pub.set(false)
	wait.Until(t, 10*time.Second, "the outbox to drain once NATS is back", func() bool { return b.OutboxDepth(t) == 0 })
	if got := len(b.pub.msgIDs()); got != 5 {
		t.Fatalf("published %d notifications, want 5", got)
	}
}
