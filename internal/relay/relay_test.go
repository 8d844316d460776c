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
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/tools"
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
	drv, err := sqlitedriver.Open(context.Background(), t.TempDir()+"/r.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := store.New(drv, store.Options{})
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := &bundle{st: st, pub: &faultyPublisher{}}
	b.relay = relay.New(relay.Config{PollInterval: 20 * time.Millisecond}, st, b.pub, log)
	b.flow = flow.New(st, ids.New(-1), flow.Config{ServerURL: "http://127.0.0.1:8082", LeaseTTL: time.Second}, tools.Kinds(), log, b.relay.Wake)
	return b
}

func (b *bundle) outboxDepth(t *testing.T) int64 {
	t.Helper()
	s, err := store.ReadValue(context.Background(), b.st, func(q store.Querier) (store.Stats, error) {
		return q.Stats(context.Background())
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.OutboxDepth
}

func eventually(t *testing.T, fn func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fn() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
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
	ctx := context.Background()
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
	eventually(t, func() bool { return b.pub.failedRounds() >= 3 }, "several refused publish rounds")
	if d := b.outboxDepth(t); d != 5 {
		t.Fatalf("outbox depth %d while NATS is down, want 5", d)
	}
	b.pub.set(false)
	eventually(t, func() bool { return b.outboxDepth(t) == 0 }, "the outbox to drain once NATS is back")
	if got := len(b.pub.msgIDs()); got != 5 {
		t.Fatalf("published %d notifications, want 5", got)
	}
}
