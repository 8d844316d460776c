// Package lifecycle owns a process's goroutines. A Group starts each one
// with the group's context, and Stop cancels that context and waits for all
// of them, so nothing a server or worker started outlives what it closes
// after Stop (the store, the NATS connection).
//
// It is nats-server's pattern (startGoRoutine and a wait group): once Stop
// has begun, Go starts nothing and says so, so a callback that fires during
// shutdown, such as a NATS reconnect handler, cannot leak a goroutine.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Group runs goroutines under one stop signal. The zero value is not
// usable; call New.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex // guards stopping, err and done, and orders wg.Add before Wait
	stopping bool
	err      error
	wg       sync.WaitGroup
	done     chan struct{} // closed when every goroutine has ended, once Wait began
}

// New returns a group whose context is derived from parent.
func New(parent context.Context) *Group {
	ctx, cancel := context.WithCancel(parent)
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is the group's context: it ends when Stop is called, when the
// parent ends, or when a goroutine fails.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn in a new goroutine with the group's context and reports true,
// or, once Stop has begun, runs nothing and reports false. A non-nil error
// from fn (other than the group's own cancellation) stops the group's
// context, as in errgroup, and is returned by Stop, prefixed with name.
func (g *Group) Go(name string, fn func(ctx context.Context) error) bool {
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		return false
	}
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		err := fn(g.ctx)
		if err == nil || (errors.Is(err, context.Canceled) && g.ctx.Err() != nil) {
			return
		}
		g.mu.Lock()
		if g.err == nil {
			g.err = fmt.Errorf("%s: %w", name, err)
		}
		g.mu.Unlock()
		g.cancel()
	}()
	return true
}

// Wait is a gentle stop: like Stop it starts nothing from now on, but it
// cancels nothing, and waits until every goroutine has ended by itself or
// ctx ends. It reports whether they all ended. A worker uses it to give
// running jobs a grace period; Stop still follows, to cancel the rest.
func (g *Group) Wait(ctx context.Context) bool {
	select {
	case <-g.drained():
		return true
	case <-ctx.Done():
		return false
	}
}

// Stop cancels the group's context, waits for every goroutine it started,
// and returns the first failure. It may be called more than once.
func (g *Group) Stop() error {
	done := g.drained()
	g.cancel()
	<-done
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// drained stops the group taking goroutines and returns a channel closed
// once all it started have ended.
func (g *Group) drained() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopping = true
	if g.done == nil {
		g.done = make(chan struct{})
		go func() { g.wg.Wait(); close(g.done) }()
	}
	return g.done
}
