package flow

import (
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/tools"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func entry(path string, version int) store.CatalogEntry {
	return store.CatalogEntry{CatalogID: int64(1000 + version), Path: path, Version: version, Content: "big"}
}

func TestCatalogCache(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Second
	newCache := func(ttl time.Duration) (*catalogCache, *fakeClock) {
		clk := &fakeClock{t: time.Unix(1e9, 0)}
		return newCatalogCache(16, ttl, clk.now), clk
	}

	t.Run("LatestTrustedForTTL", func(t *testing.T) {
		t.Parallel()
		c, clk := newCache(ttl)
		c.put(entry("p", 1), true)
		clk.add(ttl - time.Millisecond)
		e, ok := c.get("p", 0)
		if !ok || e.Version != 1 {
			t.Fatalf("latest within the TTL: got v%d, %v; want v1 from memory", e.Version, ok)
		}
		if e.Content != "" {
			t.Fatal("the cache kept the content; the parsed playbook is cached by catalog id, the text is dead weight")
		}
		clk.add(time.Millisecond)
		if _, ok := c.get("p", 0); ok {
			t.Fatal("latest still trusted after the TTL: a lost register word would leave it stale for ever")
		}
	})

	t.Run("PinnedVersionNeverStale", func(t *testing.T) {
		t.Parallel()
		c, clk := newCache(ttl)
		c.put(entry("p", 1), true) // read as latest: pinned as v1 too
		c.put(entry("p", 2), false)
		clk.add(1000 * ttl)
		for _, v := range []int{1, 2} {
			if e, ok := c.get("p", v); !ok || e.Version != v {
				t.Fatalf("pinned v%d after 1000 TTLs: got v%d, %v; want it from memory (versions are immutable)", v, e.Version, ok)
			}
		}
		if _, ok := c.get("p", 0); ok {
			t.Fatal("latest trusted after 1000 TTLs")
		}
	})

	t.Run("RegisteredReplacesLatest", func(t *testing.T) {
		t.Parallel()
		c, clk := newCache(ttl)
		c.put(entry("p", 1), true)
		clk.add(ttl / 2)
		c.registered(entry("p", 2))
		clk.add(ttl - time.Millisecond) // the word restarts the TTL
		if e, ok := c.get("p", 0); !ok || e.Version != 2 {
			t.Fatalf("latest after the register word: got v%d, %v; want v2", e.Version, ok)
		}
		if e, ok := c.get("p", 1); !ok || e.Version != 1 {
			t.Fatalf("pinned v1 after v2 was registered: got v%d, %v", e.Version, ok)
		}
	})

	t.Run("LatestNeverMovesBack", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(ttl)
		// A store read that started before v2's register ends after the
		// word of it arrived.
		c.registered(entry("p", 2))
		c.put(entry("p", 1), true)
		if e, ok := c.get("p", 0); !ok || e.Version != 2 {
			t.Fatalf("latest after a late read of v1: got v%d, %v; want v2", e.Version, ok)
		}
		c.registered(entry("p", 1)) // a duplicate, late word
		if e, _ := c.get("p", 0); e.Version != 2 {
			t.Fatalf("latest after a late word of v1: got v%d; want v2", e.Version)
		}
	})

	t.Run("ZeroTTLKeepsNothing", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(0)
		c.put(entry("p", 1), true)
		c.registered(entry("p", 2))
		for _, v := range []int{0, 1, 2} {
			if _, ok := c.get("p", v); ok {
				t.Fatalf("TTL 0 served (p, %d) from memory; it must read every submit", v)
			}
		}
	})

	t.Run("Bounded", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(ttl)
		for v := 1; v <= 100; v++ {
			c.put(entry("p", v), false)
		}
		if n := c.lru.Len(); n != 16 {
			t.Fatalf("%d entries, want the bound of 16", n)
		}
	})
}

func onePlaybook(version int) string {
	return strings.ReplaceAll(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: c, path: c/one}
workload: {v: VERSION}
workflow:
  - step: start
    tool: {kind: noop}
`, "VERSION", strconv.Itoa(version))
}

// Two services on one store stand for two servers. The one that registers
// runs the new version at once; the other runs its cached latest until
// told (Registered) or until the TTL ends, and a pinned version is never
// read twice.
func TestServiceCatalogCache(t *testing.T) {
	t.Parallel()
	st := sqlitetest.Store(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const ttl = time.Minute
	clk := &fakeClock{t: time.Now()}
	newService := func() *Service {
		s := New(st, ids.New(-1), Config{LeaseTTL: time.Second, CatalogCacheTTL: ttl}, tools.Kinds(), log, nil)
		s.nowFn = clk.now
		return s
	}
	a, b := newService(), newService()
	var told []store.CatalogEntry
	a.cfg.OnRegister = func(e store.CatalogEntry) { told = append(told, e) }
	ctx := t.Context()
	version := func(s *Service, v int) int {
		t.Helper()
		ex, err := s.Execute(ctx, "c/one", v, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ex.Version
	}

	if _, err := a.Register(ctx, onePlaybook(1)); err != nil {
		t.Fatal(err)
	}
	if v := version(b, 0); v != 1 {
		t.Fatalf("b ran v%d, want v1", v)
	}
	if _, err := a.Register(ctx, onePlaybook(2)); err != nil {
		t.Fatal(err)
	}
	if len(told) != 2 || told[1].Version != 2 || told[1].Path != "c/one" {
		t.Fatalf("OnRegister heard %+v; want v1 then v2 of c/one", told)
	}
	if v := version(a, 0); v != 2 {
		t.Fatalf("a registered v2 and then ran v%d; a register must update its own server's cache at once", v)
	}
	if v := version(b, 0); v != 1 {
		t.Fatalf("b ran v%d before it was told of v2; want its cached v1 (else the cache read the store)", v)
	}
	b.Registered(told[1])
	if v := version(b, 0); v != 2 {
		t.Fatalf("b ran v%d after it was told of v2", v)
	}

	// A word lost: b learns of v3 only when its cached latest expires.
	if _, err := a.Register(ctx, onePlaybook(3)); err != nil {
		t.Fatal(err)
	}
	if v := version(b, 0); v != 2 {
		t.Fatalf("b ran v%d within the TTL; want its cached v2", v)
	}
	clk.add(ttl)
	if v := version(b, 0); v != 3 {
		t.Fatalf("b ran v%d after the TTL; want v3 from the store", v)
	}
	if v := version(b, 1); v != 1 {
		t.Fatalf("b ran v%d when asked for version 1", v)
	}
}
