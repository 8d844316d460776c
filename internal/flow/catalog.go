package flow

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/store"
)

// DefaultCatalogCacheSize bounds the catalog cache: how many (path,
// version) entries, "latest" included, a server keeps. An entry is a few
// hundred bytes (the content stays out: the parsed playbook is cached by
// catalog id), so the bound is about memory only for a huge catalog.
const DefaultCatalogCacheSize = 4096

var mCatalogCache = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "millrace_catalog_cache_total",
	Help: "Submits whose catalog entry came from memory (hit) or from the store (miss).",
}, []string{"result"})

// catalogCache saves the catalog read of a submit. It maps (path, version)
// to the entry, and (path, 0) to the latest version of path.
//
// A pinned version never changes (catalog rows are immutable), so it is
// trusted for as long as it is kept. "Latest" changes with every register:
// the registering server updates its own cache before Register returns, and
// tells the other servers over core NATS (CatalogRegistered), but that word
// may be lost (NATS down, a server reconnecting), so a latest entry is
// trusted only for ttl after it was read or told. ttl <= 0 turns the cache
// off: every submit reads the store.
//
// Latest only moves forward: a store read that started before a register
// and finishes after the word of it arrived must not put the older version
// back (versions of a path only grow, so the larger one is the newer).
type catalogCache struct {
	ttl time.Duration
	now func() time.Time

	mu  sync.Mutex
	lru *simplelru.LRU[catalogKey, catalogItem]
}

type catalogKey struct {
	path    string
	version int // 0 = latest
}

type catalogItem struct {
	entry store.CatalogEntry // without Content
	at    time.Time          // when it was read or told; matters for latest only
}

func newCatalogCache(size int, ttl time.Duration, now func() time.Time) *catalogCache {
	lru, err := simplelru.NewLRU[catalogKey, catalogItem](size, nil)
	if err != nil {
		panic(err) // size is a positive constant
	}
	return &catalogCache{ttl: ttl, now: now, lru: lru}
}

// get returns the entry of (path, version), version 0 = latest, if it is
// kept and, for latest, still trusted.
func (c *catalogCache) get(path string, version int) (store.CatalogEntry, bool) {
	if c.ttl <= 0 {
		return store.CatalogEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.lru.Get(catalogKey{path, version})
	if !ok || (version == 0 && c.now().Sub(it.at) >= c.ttl) {
		mCatalogCache.WithLabelValues("miss").Inc()
		return store.CatalogEntry{}, false
	}
	mCatalogCache.WithLabelValues("hit").Inc()
	return it.entry, true
}

// put keeps an entry read from the store for (path, version); asked for
// latest (version 0), it is also the latest, unless a newer one is known.
func (c *catalogCache) put(e store.CatalogEntry, latest bool) {
	if c.ttl <= 0 {
		return
	}
	e.Content = "" // the parsed playbook is cached by catalog id
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Add(catalogKey{e.Path, e.Version}, catalogItem{entry: e})
	if !latest {
		return
	}
	k := catalogKey{e.Path, 0}
	if cur, ok := c.lru.Peek(k); ok && cur.entry.Version > e.Version {
		return // a register was heard of while this read ran
	}
	c.lru.Add(k, catalogItem{entry: e, at: now})
}

// registered records a new version of a path, registered here or told of
// by another server: it is the latest from now on.
func (c *catalogCache) registered(e store.CatalogEntry) {
	c.put(e, true)
}
