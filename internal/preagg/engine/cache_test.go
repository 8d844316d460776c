package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/millrace/millrace/internal/preagg/storage"
)

// memStore is a Store in memory that counts Gets and can hold them.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
	gets atomic.Int32
	gate chan struct{} // when set, Get waits for it
}

func newMemStore(objs map[string][]byte) *memStore { return &memStore{objs: objs} }

func (m *memStore) Put(_ context.Context, key string, r io.Reader) (int64, error) {
	b, err := io.ReadAll(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = b
	return int64(len(b)), err
}

func (m *memStore) Get(ctx context.Context, key string, w io.Writer) error {
	m.gets.Add(1)
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	b, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w", key, storage.ErrNotFound)
	}
	_, err := w.Write(b)
	return err
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

func (m *memStore) String() string { return "mem:" }

func kb(c byte) []byte { return bytes.Repeat([]byte{c}, 1000) }

func mustAcquire(t *testing.T, c *cache, key string) (string, func()) {
	t.Helper()
	p, rel, err := c.acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return p, rel
}

func cached(c *cache, key string) bool {
	_, err := os.Stat(filepath.Join(c.dir, cacheName(key)))
	return err == nil
}

func TestCacheLRUEviction(t *testing.T) {
	t.Parallel()
	s := newMemStore(map[string][]byte{"a": kb('a'), "b": kb('b'), "c": kb('c'), "d": kb('d')})
	c, err := openCache(t.TempDir(), 2500, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		p, rel := mustAcquire(t, c, k)
		if got, _ := os.ReadFile(p); !bytes.Equal(got, s.objs[k]) {
			t.Fatalf("%s: wrong content", k)
		}
		rel()
	}
	_, rel := mustAcquire(t, c, "a") // a is now the most recent
	rel()
	_, rel = mustAcquire(t, c, "c") // over 2500: b, the least recent, goes
	rel()
	if !cached(c, "a") || cached(c, "b") || !cached(c, "c") {
		t.Fatalf("after c: a %v b %v c %v", cached(c, "a"), cached(c, "b"), cached(c, "c"))
	}
	if n, files := c.usage(); n != 2000 || files != 2 {
		t.Fatalf("usage %d bytes, %d files", n, files)
	}
	// Hits do not fetch again.
	gets := s.gets.Load()
	_, rel = mustAcquire(t, c, "a")
	rel()
	if s.gets.Load() != gets {
		t.Fatal("a cached file was fetched again")
	}
}

// A file in use is never evicted, even over the limit; it goes once
// released.
func TestCachePinned(t *testing.T) {
	t.Parallel()
	s := newMemStore(map[string][]byte{"a": kb('a'), "b": kb('b')})
	c, err := openCache(t.TempDir(), 500, s)
	if err != nil {
		t.Fatal(err)
	}
	pa, relA := mustAcquire(t, c, "a")
	pb, relB := mustAcquire(t, c, "b")
	for _, p := range []string{pa, pb} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("a pinned file was evicted: %v", err)
		}
	}
	relA()
	if cached(c, "a") || !cached(c, "b") {
		t.Fatalf("after releasing a: a %v b %v", cached(c, "a"), cached(c, "b"))
	}
	relB()
	if n, files := c.usage(); n != 0 || files != 0 {
		t.Fatalf("usage %d bytes, %d files", n, files)
	}
}

// Callers asking for the same object at once share one fetch.
func TestCacheSingleFetch(t *testing.T) {
	t.Parallel()
	s := newMemStore(map[string][]byte{"a": kb('a')})
	s.gate = make(chan struct{})
	c, err := openCache(t.TempDir(), 1<<20, s)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			p, rel, err := c.acquire(t.Context(), "a")
			if err != nil {
				errs <- err
				return
			}
			defer rel()
			if got, _ := os.ReadFile(p); !bytes.Equal(got, kb('a')) {
				errs <- errors.New("wrong content")
			}
		})
	}
	close(s.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.gets.Load(); n != 1 {
		t.Fatalf("%d fetches", n)
	}
}

func TestCacheMissingAndCancelled(t *testing.T) {
	t.Parallel()
	s := newMemStore(map[string][]byte{"a": kb('a')})
	dir := t.TempDir()
	c, err := openCache(dir, 1<<20, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.acquire(t.Context(), "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	s.gate = make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := c.acquire(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// Neither left a file or an entry behind.
	if des, _ := os.ReadDir(dir); len(des) != 0 {
		t.Fatalf("files left: %v", des)
	}
	close(s.gate)
	if _, rel := mustAcquire(t, c, "a"); rel == nil {
		t.Fatal("no release")
	}
}

// A restarted process reuses the files already fetched, and drops a file
// removed behind its back.
func TestCacheReopen(t *testing.T) {
	t.Parallel()
	s := newMemStore(map[string][]byte{"a": kb('a'), "b": kb('b')})
	dir := t.TempDir()
	c, err := openCache(dir, 1<<20, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		_, rel := mustAcquire(t, c, k)
		rel()
	}
	os.WriteFile(filepath.Join(dir, "fetch-1.tmp"), []byte("half"), 0o640)
	c2, err := openCache(dir, 1<<20, s)
	if err != nil {
		t.Fatal(err)
	}
	if n, files := c2.usage(); n != 2000 || files != 2 {
		t.Fatalf("reopened: %d bytes, %d files", n, files)
	}
	if _, err := os.Stat(filepath.Join(dir, "fetch-1.tmp")); !os.IsNotExist(err) {
		t.Fatal("a cut-short fetch was kept")
	}
	gets := s.gets.Load()
	_, rel := mustAcquire(t, c2, "a")
	rel()
	if s.gets.Load() != gets {
		t.Fatal("a file from before the restart was fetched again")
	}
	os.Remove(filepath.Join(dir, cacheName("b")))
	p, rel := mustAcquire(t, c2, "b")
	defer rel()
	if got, _ := os.ReadFile(p); !bytes.Equal(got, kb('b')) || s.gets.Load() != gets+1 {
		t.Fatal("a removed file was not fetched again")
	}
	// Reopening with a smaller limit evicts down to it.
	c3, err := openCache(dir, 1500, s)
	if err != nil {
		t.Fatal(err)
	}
	if n, files := c3.usage(); n != 1000 || files != 1 {
		t.Fatalf("reopened smaller: %d bytes, %d files", n, files)
	}
}
