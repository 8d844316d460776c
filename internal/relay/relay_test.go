package relay_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/relay"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/tools"
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
	st    *store.Store
	flow  *flow.Service
	pub   *faultyPublisher
	relay *relay.Relay
}

const pb = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: r, path: r/one}
workflow:
  - step: start
    tool: {kind: noop}
`

func setup(t *testing.T) *bundle {
	t.Helper()
	st := sqlitetest.Store(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := &bundle{st: st, pub: &faultyPublisher{}}
	b.relay = relay.New(relay.Config{PollInterval: 20 * time.Millisecond}, st, b.pub, log)
	b.flow = flow.New(st, ids.New(-1), flow.Config{ServerURL: "http://127.0.0.1:8082", LeaseTTL: time.Second}, tools.Kinds(), log, b.relay.Wake)
	return b
}

func (b *bundle) outboxDepth(t *testing.T) int64 {
	t.Helper()
	s, err := store.ReadValue(t.Context(), b.st, func(q store.Querier) (store.Stats, error) {
		return q.Stats(t.Context())
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.OutboxDepth
}

func (b *bundle) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestOutboxSurvivesPublishFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.pub.set(true)
	b.start(t)
	if _, err := b.flow.Register(ctx, pb); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := b.flow.Execute(ctx, "r/one", 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	// While NATS refuses, every notification stays in the outbox.
	wait.Until(t, 10*time.Second, "several refused publish rounds", func() bool { return b.pub.failedRounds() >= 3 })
	if d := b.outboxDepth(t); d != 5 {
		t.Fatalf("outbox depth %d while NATS is down, want 5", d)
	}
	b.pub.set(false)
	wait.Until(t, 10*time.Second, "the outbox to drain once NATS is back", func() bool { return b.outboxDepth(t) == 0 })
	if got := len(b.pub.msgIDs()); got != 5 {
		t.Fatalf("published %d notifications, want 5", got)
	}
}
