package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

func versionedPlaybook(path string, version int) string {
	return strings.NewReplacer("PATH", path, "VERSION", fmt.Sprint(version)).Replace(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: versioned, path: PATH}
workload: {v: VERSION}
workflow:
  - step: start
    tool: {kind: noop}
`)
}

// twoServers starts two servers on one PostgreSQL schema with the catalog
// cache TTL given; with oneNATS they share the first one's NATS (and so
// hear each other's registers), else each has its own and no word passes.
func twoServers(t *testing.T, ttl time.Duration, oneNATS bool) (a, b *servertest.Harness) {
	t.Helper()
	url := pgtest.NewSchema(t)
	a = servertest.Start(t, func(c *config.Server) { c.DatabaseURL, c.CatalogCacheTTL = url, ttl })
	b = servertest.Start(t, func(c *config.Server) {
		c.DatabaseURL, c.CatalogCacheTTL = url, ttl
		if oneNATS {
			c.NATS = a.Cfg.NATS
		}
	})
	return a, b
}

// ranVersion submits path on h and returns the version the execution runs.
func ranVersion(t *testing.T, h *servertest.Harness, path string) int {
	t.Helper()
	st, err := h.API.Execute(t.Context(), path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := h.API.Execution(t.Context(), st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	return ex.Version
}

func register(t *testing.T, h *servertest.Harness, path string, version int) {
	t.Helper()
	r, err := h.API.Register(t.Context(), versionedPlaybook(path, version))
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != version {
		t.Fatalf("registered %s as v%d, want v%d", path, r.Version, version)
	}
}

// A register on server A reaches server B's catalog cache over NATS: with
// a TTL of an hour, only that word can make B run the new version.
func TestCatalogRegisterReachesOtherServer(t *testing.T) {
	t.Parallel()
	a, b := twoServers(t, time.Hour, true)
	const path = "cat/word"
	register(t, a, path, 1)
	if v := ranVersion(t, b, path); v != 1 {
		t.Fatalf("B ran v%d, want v1", v)
	}
	register(t, a, path, 2)
	if v := ranVersion(t, a, path); v != 2 {
		t.Fatalf("A ran v%d right after registering v2 itself; want v2", v)
	}
	wait.For(t, 10*time.Second, func() error {
		if v := ranVersion(t, b, path); v != 2 {
			return fmt.Errorf("B still runs v%d of %s (its cached latest); want v2, registered on A", v, path)
		}
		return nil
	})
}

// With no word between the servers (each has its own NATS), B runs its
// cached latest for at most MILLRACE_CATALOG_CACHE_SECONDS.
func TestCatalogCacheLostWordBoundedByTTL(t *testing.T) {
	t.Parallel()
	const ttl = time.Second
	a, b := twoServers(t, ttl, false)
	const path = "cat/lost"
	register(t, a, path, 1)
	if v := ranVersion(t, b, path); v != 1 {
		t.Fatalf("B ran v%d, want v1", v)
	}
	register(t, a, path, 2)
	registered := time.Now()
	wait.For(t, 10*time.Second, func() error {
		if v := ranVersion(t, b, path); v != 2 {
			return fmt.Errorf("B still runs v%d of %s; want v2 once its cached latest expired", v, path)
		}
		return nil
	})
	// Polls are slow under -race; the point is "about the TTL", not "never".
	if d := time.Since(registered); d > ttl+5*time.Second {
		t.Fatalf("B took %s to run v2, want about the TTL of %s", d, ttl)
	}
}

// MILLRACE_CATALOG_CACHE_SECONDS=0 reads the catalog on every submit: B
// runs the new version at once, with no word from A.
func TestCatalogCacheOffReadsEverySubmit(t *testing.T) {
	t.Parallel()
	a, b := twoServers(t, 0, false)
	const path = "cat/off"
	for v := 1; v <= 3; v++ {
		register(t, a, path, v)
		if got := ranVersion(t, b, path); got != v {
			t.Fatalf("B ran v%d right after v%d was registered on A, with the cache off", got, v)
		}
	}
}
