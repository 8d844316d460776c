package flow_test

import (
	"context"
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
	st     *store.Store
	flow   *flow.Service
	pub    *recorder
	relay  *relay.Relay
	reaper *flow.Reaper
}

const pb = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: r, path: r/one}
workflow:
  - step: start
    tool: {kind: noop}
`

func setup(t *testing.T, redeliverAfter time.Duration) *bundle {
	t.Helper()
	st := sqlitetest.Store(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := &bundle{st: st, pub: &recorder{}}
	b.relay = relay.New(relay.Config{PollInterval: 20 * time.Millisecond}, st, b.pub, log)
	b.flow = flow.New(st, ids.New(-1), flow.Config{ServerURL: "http://127.0.0.1:8082", LeaseTTL: time.Second}, tools.Kinds(), log, b.relay.Wake)
	b.reaper = b.flow.NewReaper(flow.ReaperConfig{Interval: time.Hour, RedeliverAfter: redeliverAfter})
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

// start runs the relay (the reaper is driven by ReapOnce).
func (b *bundle) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestReaperRenotifiesUnclaimedAndExpired(t *testing.T) {
	t.Parallel()
	// "At once" must hold on a loaded machine: draining the outbox can take
	// longer than 50 ms there, so the redelivery delay is a bit longer.
	b := setup(t, 300*time.Millisecond)
	ctx := t.Context()
	b.start(t)
	if _, err := b.flow.Register(ctx, pb); err != nil {
		t.Fatal(err)
	}
	ex, err := b.flow.Execute(ctx, "r/one", 0, nil)
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
	cmds, _ := store.ReadValue(ctx, b.st, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(ctx, ex.ExecutionID)
	})
	if _, err := b.flow.Claim(ctx, cmds[0].EventID, "w1", 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.reaper.ReapOnce(ctx); n != 0 {
		t.Fatalf("re-notified %d commands under a live lease", n)
	}
	wait.Until(t, 10*time.Second, "the expired lease to be re-notified", func() bool { // the lease is 1 s
		n, _ := b.reaper.ReapOnce(ctx)
		return n == 1
	})
	wait.Until(t, 10*time.Second, "the outbox to drain", func() bool { return b.outboxDepth(t) == 0 })
	if n, _ := b.reaper.ReapOnce(ctx); n != 0 {
		t.Fatalf("expired lease re-notified again at once (%d)", n)
	}
	// The next worker gets attempt 2.
	cl, err := b.flow.Claim(ctx, cmds[0].EventID, "w2", 0)
	if err != nil || cl.Attempt != 2 {
		t.Fatalf("claim after expiry = %+v, %v; want attempt 2", cl, err)
	}
}
