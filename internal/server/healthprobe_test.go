package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// Concurrent probes share one store check; a fresh answer is reused; a
// failed check is what the next probe sees.
func TestStoreProbeSharesOneCheck(t *testing.T) {
	t.Parallel()
	var p storeProbe
	var checks atomic.Int64
	release := make(chan struct{})
	slow := func(ctx context.Context) (store.Stats, error) {
		checks.Add(1)
		<-release
		return store.Stats{ExecutionsRunning: 3}, nil
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if c := p.get(t.Context(), slow); c.err != nil || c.stats.ExecutionsRunning != 3 {
				t.Errorf("probe got %+v", c)
			}
		})
	}
	wait.Until(t, time.Minute, "a store check started", func() bool { return checks.Load() > 0 })
	close(release)
	wg.Wait()
	if n := checks.Load(); n != 1 {
		t.Fatalf("%d store checks for 20 concurrent probes; want 1", n)
	}
	if c := p.get(t.Context(), slow); c.stats.ExecutionsRunning != 3 {
		t.Fatalf("a probe right after got %+v", c)
	}
	// An old answer makes the next probe wait for a new check.
	p.mu.Lock()
	p.last.at = time.Now().Add(-time.Hour)
	p.mu.Unlock()
	down := errors.New("connection refused")
	if c := p.get(t.Context(), func(context.Context) (store.Stats, error) { return store.Stats{}, down }); !errors.Is(c.err, down) {
		t.Fatalf("after the store went down a probe got %+v", c)
	}
}
