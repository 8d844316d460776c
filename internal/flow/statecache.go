package flow

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
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
	arrived  map[string]int
}

// stateCache holds runStates by execution id, within a count and a byte
// budget, evicting the least recently saved first (each eviction costs one
// rebuild). A state is taken out while a transaction works on it, so two
// transactions never share one.
type stateCache struct {
	mu       sync.Mutex
	lru      *simplelru.LRU[int64, *runState] // nil: caching is off
	maxBytes int64
	bytes    int64 // of the states in lru, kept by its eviction callback
}

func newStateCache(max int, maxBytes int64) *stateCache {
	c := &stateCache{maxBytes: maxBytes}
	if max > 0 {
		// NewLRU fails only for a size <= 0.
		c.lru, _ = simplelru.NewLRU(max, func(_ int64, st *runState) { c.bytes -= st.size })
	}
	return c
}

// take removes and returns the state of execID if it was saved at revision.
func (c *stateCache) take(execID, revision int64) *runState {
	if c.lru == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st, _ := c.lru.Peek(execID)
	c.lru.Remove(execID)
	if st == nil || st.revision != revision {
		mStateCache.WithLabelValues("miss").Inc()
		return nil
	}
	mStateCache.WithLabelValues("hit").Inc()
	return st
}

// put saves st, evicting the oldest states while over either budget.
func (c *stateCache) put(execID int64, st *runState) {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(execID)
	if st.size > c.maxBytes/8 {
		return
	}
	c.lru.Add(execID, st) // evicts the oldest past the count
	c.bytes += st.size
	for c.bytes > c.maxBytes {
		c.lru.RemoveOldest()
	}
}

func (c *stateCache) drop(execID int64) {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(execID)
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
		workload: r.scope.Workload, context: r.scope.Context, items: r.items, arrived: r.arrived}
}
