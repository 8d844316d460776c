package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayGrowsCapsAndJitters(t *testing.T) {
	t.Parallel()
	const lo, hi = 100 * time.Millisecond, 5 * time.Second
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000} {
		want *= time.Millisecond
		seen := map[time.Duration]bool{}
		for range 200 {
			d := Delay(attempt, lo, hi)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: only %d distinct delays in 200 draws: no jitter", attempt, len(seen))
		}
	}
}

func TestBackoffResets(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: time.Second, Max: time.Minute}
	for range 5 {
		b.Next()
	}
	if b.Attempts() != 5 {
		t.Fatalf("attempts = %d, want 5", b.Attempts())
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Fatalf("after Reset the first delay is %v, want <= 1s", d)
	}
}

func TestDelayHugeAttemptDoesNotOverflow(t *testing.T) {
	t.Parallel()
	if d := Delay(1<<20, time.Second, 10*time.Second); d < 5*time.Second || d > 10*time.Second {
		t.Fatalf("delay %v, want within the cap's upper half", d)
	}
}

func TestSleepStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported a full delay on a cancelled context")
	}
	if !Sleep(t.Context(), time.Millisecond) {
		t.Fatal("Sleep did not report a completed delay")
	}
}
