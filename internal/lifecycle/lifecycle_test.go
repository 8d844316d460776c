package lifecycle_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/lifecycle"
)

func TestStopWaitsForEveryGoroutine(t *testing.T) {
	t.Parallel()
	g := lifecycle.New(t.Context())
	var ended atomic.Int32
	for range 5 {
		g.Go("sleeper", func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // cleanup after the signal
			ended.Add(1)
			return ctx.Err()
		})
	}
	if err := g.Stop(); err != nil {
		t.Fatalf("Stop = %v, want nil: cancellation by Stop is not a failure", err)
	}
	if n := ended.Load(); n != 5 {
		t.Fatalf("Stop returned with %d of 5 goroutines ended", n)
	}
}

func TestGoAfterStopStartsNothing(t *testing.T) {
	t.Parallel()
	g := lifecycle.New(t.Context())
	_ = g.Stop()
	if g.Go("late", func(context.Context) error { t.Error("ran after Stop"); return nil }) {
		t.Fatal("Go after Stop = true, want false")
	}
	if err := g.Stop(); err != nil {
		t.Fatalf("second Stop = %v", err)
	}
}

func TestFailureStopsTheGroup(t *testing.T) {
	t.Parallel()
	g := lifecycle.New(t.Context())
	boom := errors.New("boom")
	g.Go("waiter", func(ctx context.Context) error { <-ctx.Done(); return nil })
	g.Go("failer", func(context.Context) error { return boom })
	select {
	case <-g.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a failing goroutine did not cancel the group's context")
	}
	if err := g.Stop(); !errors.Is(err, boom) || err.Error() != "failer: boom" {
		t.Fatalf("Stop = %v, want failer: boom", err)
	}
}
