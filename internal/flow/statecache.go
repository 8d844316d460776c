package flow

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/store"
)

// Bounds of the engine state cache, per server.
const (
	// DefaultStateCacheSize is how many running executions' states it
	// keeps.
	DefaultStateCacheSize = 4096
	// DefaultStateCacheBytes bounds their approximate size (the command
	// rows' JSON plus a fixed cost per row). A state larger than an eighth
	// of it is not kept: that execution is rebuilt from the store instead.
	DefaultStateCacheBytes = 256 << 20
	// stateRowOverhead approximates a command row's memory besides its
	// JSON columns.
	stateRowOverhead = 256
)

var mStateCache = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "millrace_engine_state_cache_total",
	Help: "Completions whose execution state came from memory (hit) or was rebuilt from the store (miss).",
}, []string{"result"})

// runState is what deciding the next step needs of a running execution
// besides its row: the command and loop rows and what was derived from them.
// Rebuilding it reads every command of the execution, so without this cache
// each iteration of an n-item loop costs O(n) and the loop O(n²).
//
// The store is still the truth: a state is used only while the execution's
// Revision, read under its row lock, equals the revision it was saved at.
// Every transaction that changes what the state derives from sets a fresh
// revision (store.Tx.ExecutionTouch, a new id), on any server, so a stale
// copy is never used; a restart simply starts with an empty cache.
//
// A transaction puts its state under its new revision before it commits, so
// the next completion in the same shared transaction finds it. If the
// transaction rolls back, its revision never reaches the store and, being
// unique, never matches anything: the entry is dead weight until evicted.
type runState struct {
	revision int64
	size     int64 // approximate bytes, for the cache's budget
	cmds     []store.Command
	loops    map[int64]store.Loop
	results  map[string]any
	workload map[string]any
	context  map[string]any
	items    map[int64][]any
}

// stateCache holds runStates by execution id. A state is taken out while a
// transaction works on it, so two transactions never share one.
type stateCache struct {
	mu       sync.Mutex
	m        map[int64]*runState
	max      int
	maxBytes int64
	bytes    int64
}

func newStateCache(max int, maxBytes int64) *stateCache {
	return &stateCache{m: map[int64]*runState{}, max: max, maxBytes: maxBytes}
}

// take removes and returns the state of execID if it was saved at revision.
func (c *stateCache) take(execID, revision int64) *runState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.m[execID]
	c.remove(execID)
	if st == nil || st.revision != revision {
		mStateCache.WithLabelValues("miss").Inc()
		return nil
	}
	mStateCache.WithLabelValues("hit").Inc()
	return st
}

// put saves st; when full it first evicts arbitrary entries (each costs
// only one rebuild).
func (c *stateCache) put(execID int64, st *runState) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(execID)
	if st.size > c.maxBytes/8 {
		return
	}
	for k := range c.m {
		if len(c.m) < c.max && c.bytes+st.size <= c.maxBytes {
			break
		}
		c.remove(k)
	}
	c.m[execID] = st
	c.bytes += st.size
}

func (c *stateCache) drop(execID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(execID)
}

// remove deletes execID's entry; c.mu must be held.
func (c *stateCache) remove(execID int64) {
	if st, ok := c.m[execID]; ok {
		c.bytes -= st.size
		delete(c.m, execID)
	}
}

// state captures r for the cache at the revision its transaction leaves.
func (r *run) state(revision int64) *runState {
	size := int64(0)
	for _, c := range r.cmds {
		size += stateRowOverhead + int64(len(c.Tool)+len(c.Input)+2*len(c.Result)+len(c.Error))
	}
	for _, l := range r.loops {
		size += stateRowOverhead + 2*int64(len(l.Items)+len(l.Result))
	}
	return &runState{revision: revision, size: size, cmds: r.cmds, loops: r.loops, results: r.scope.Results,
		workload: r.scope.Workload, context: r.scope.Context, items: r.items}
}
