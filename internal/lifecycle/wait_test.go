package lifecycle_test

import (
	"context"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/lifecycle"
)

func TestWaitLetsGoroutinesFinishWithoutCancelling(t *testing.T) {
	t.Parallel()
	g := lifecycle.New(t.Context())
	release := make(chan struct{})
	g.Go("job", func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			t.Error("Wait cancelled the group's context")
			return ctx.Err()
		}
	})
	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if g.Wait(short) {
		t.Fatal("Wait = true while a goroutine still runs")
	}
	if g.Go("late", func(context.Context) error { t.Error("ran after Wait"); return nil }) {
		t.Fatal("Go after Wait = true, want false")
	}
	close(release)
	if !g.Wait(t.Context()) {
		t.Fatal("Wait = false after every goroutine ended")
	}
	if err := g.Stop(); err != nil {
		t.Fatalf("Stop = %v", err)
	}
}

func TestStopAfterAGraceCancelsWhatIsLeft(t *testing.T) {
	t.Parallel()
	g := lifecycle.New(t.Context())
	g.Go("stubborn", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	grace, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if g.Wait(grace) {
		t.Fatal("Wait = true for a goroutine that only ends on cancel")
	}
	if err := g.Stop(); err != nil {
		t.Fatalf("Stop = %v, want nil", err)
	}
}
