package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow/flowtest"
	"github.com/millrace/millrace/internal/relay"
	"github.com/millrace/millrace/internal/wait"
)

// poisonPublisher refuses one message id every time, as NATS refuses a
// message larger than max_payload, and accepts the rest.
type poisonPublisher struct {
	mu       sync.Mutex
	poison   string
	attempts int
	got      map[string]bool
}

func (p *poisonPublisher) PublishBatch(_ context.Context, msgs []bus.OutMsg) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		if m.MsgID == p.poison {
			p.attempts++
			errs[i] = fmt.Errorf("publish to %s: %w", m.Subject, nats.ErrMaxPayload)
			continue
		}
		p.got[m.MsgID] = true
	}
	return errs
}

func (p *poisonPublisher) state() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts, len(p.got)
}

// A notification that fails every time does not hold back the ones behind
// it: they go out, it backs off on its own, and after ParkAfter failures
// it is parked (retried only every minute), still pending in the store
// where millrace verify reports it.
func TestPoisonedNotificationIsParkedAndBlocksNothing(t *testing.T) {
	t.Parallel()
	pub := &poisonPublisher{got: map[string]bool{}}
	b := flowtest.New(t, pub) // its own relay is never started: r below is the one
	first := execute(t, b, 6)
	pub.poison = onlyCommand(t, b.Store, first).CommandID
	r := relay.New(relay.Config{PollInterval: 20 * time.Millisecond, ParkAfter: 3, RowBackoff: 10 * time.Millisecond},
		b.Store, pub, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.Wake()

	wait.Until(t, time.Minute, "the 5 healthy notifications published and the poisoned one parked", func() bool {
		_, n := pub.state()
		return n == 5 && r.Parked() == 1
	})
	attempts, _ := pub.state()
	if attempts != 3 {
		t.Fatalf("the poisoned notification was tried %d times before parking, want 3 (ParkAfter)", attempts)
	}
	if d := b.OutboxDepth(t); d != 1 {
		t.Fatalf("pending notifications %d, want the parked one still pending (1)", d)
	}
	// Parked: new work still flows and the parked row is not hammered.
	later, err := b.Flow.Execute(t.Context(), flowtest.OneStepPath, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Wake()
	id := onlyCommand(t, b.Store, later.ExecutionID).CommandID
	wait.Until(t, time.Minute, "a notification written after the parking published", func() bool {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		return pub.got[id]
	})
	if a, _ := pub.state(); a != 3 {
		t.Fatalf("the parked notification was tried %d times, want it left alone (3) within a minute", a)
	}
}
