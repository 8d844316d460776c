package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/wait"
)

// A worker beats on millrace.presence.<kind> with its id, slots and busy
// slots, so servers count it (package monitor).
func TestRuntimePresenceBeats(t *testing.T) {
	t.Parallel()
	k := newFakeKind(t)
	hold := make(chan struct{})
	k.run = func(ctx context.Context, id string) error {
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return nil
	}
	s := start(t, k, 4, time.Second)
	beats := make(chan *nats.Msg, 16)
	sub, err := s.conn.NC.ChanSubscribe(bus.PresenceSubject("fake"), beats)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	defer close(hold)
	s.send(fakeMsg{ID: "held"})
	// The first beat may predate the job (or the subscription); the next
	// comes within bus.PresenceInterval.
	wait.For(t, 3*bus.PresenceInterval, func() error {
		select {
		case m := <-beats:
			var p bus.Presence
			if err := json.Unmarshal(m.Data, &p); err != nil {
				t.Fatalf("beat %q: %v", m.Data, err)
			}
			if p.WorkerID != s.rt.ID() || p.Kind != "fake" || p.Pool != "" || p.Slots != 4 || p.At.IsZero() {
				t.Fatalf("beat = %+v; want worker %s of kind fake with 4 slots", p, s.rt.ID())
			}
			if p.Busy != 1 {
				return fmt.Errorf("beat with %d busy slots, want 1 (the held job)", p.Busy)
			}
			return nil
		default:
			return fmt.Errorf("no beat yet")
		}
	})
}
