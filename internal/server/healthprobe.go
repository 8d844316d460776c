package server

import (
	"context"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// Health's store check: at most one query in flight, its answer shared.
// Probes come often (every kubelet, load balancer and monitor), and under
// overload each one queued behind the writes for a pool connection made
// health slow exactly when it matters; now a probe answers from the last
// check while a newer one runs, and waits only when that answer is too
// old to trust (issue 15: health within 100 ms under overload).
const (
	// probeFresh: an answer this young is reused without a new check.
	probeFresh = 250 * time.Millisecond
	// probeStale: an answer older than this is not given while a check
	// runs; the probe waits for the check (bounded by healthStoreTimeout).
	probeStale = 3 * time.Second
)

type storeCheck struct {
	at    time.Time
	stats store.Stats
	err   error
}

type storeProbe struct {
	mu      sync.Mutex
	last    storeCheck
	running chan struct{} // closed when the check in flight ends; nil: none
}

// get returns a store check no older than probeStale, starting a new one
// when the last is older than probeFresh. check runs detached from ctx
// (a probe that gives up must not cancel the answer others wait for),
// under healthStoreTimeout.
func (p *storeProbe) get(ctx context.Context, check func(context.Context) (store.Stats, error)) storeCheck {
	p.mu.Lock()
	last := p.last
	if !last.at.IsZero() && time.Since(last.at) < probeFresh {
		p.mu.Unlock()
		return last
	}
	if p.running == nil {
		done := make(chan struct{})
		p.running = done
		go func() {
			cctx, cancel := context.WithTimeout(context.Background(), healthStoreTimeout)
			st, err := check(cctx)
			cancel()
			p.mu.Lock()
			p.last, p.running = storeCheck{at: time.Now(), stats: st, err: err}, nil
			p.mu.Unlock()
			close(done)
		}()
	}
	running := p.running
	p.mu.Unlock()
	if !last.at.IsZero() && time.Since(last.at) < probeStale {
		return last
	}
	select {
	case <-running:
	case <-ctx.Done():
		return storeCheck{at: time.Now(), err: ctx.Err()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}
