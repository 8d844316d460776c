package engine

import (
	"cmp"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/millrace/millrace/internal/preagg/storage"
)

// cache keeps local copies of objects. Object keys are immutable, so a
// cached file never goes stale; files are named by a hash of their key so
// they survive a restart. Above max bytes the least recently used files
// are removed, except those a query is reading (pinned).
type cache struct {
	dir   string
	max   int64
	store storage.Store

	mu      sync.Mutex
	entries map[string]*entry // by file name
	lru     *list.List        // of *entry that are ready; front is most recent
	bytes   int64
}

type entry struct {
	name  string
	size  int64
	refs  int
	ready chan struct{} // closed when the fetch ended
	err   error         // the fetch's error
	elem  *list.Element // nil until ready (and after eviction)
}

const cacheSuffix = ".parquet"

func openCache(dir string, max int64, store storage.Store) (*cache, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	c := &cache{dir: dir, max: max, store: store, entries: map[string]*entry{}, lru: list.New()}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	// Files a previous process fetched are reused, oldest use first out.
	type old struct {
		e     *entry
		mtime int64
	}
	var olds []old
	for _, de := range des {
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if !strings.HasSuffix(de.Name(), cacheSuffix) {
			os.Remove(filepath.Join(dir, de.Name())) // a fetch cut short
			continue
		}
		e := &entry{name: de.Name(), size: info.Size(), ready: make(chan struct{})}
		close(e.ready)
		olds = append(olds, old{e, info.ModTime().UnixNano()})
	}
	slices.SortFunc(olds, func(a, b old) int { return cmp.Compare(a.mtime, b.mtime) })
	for _, o := range olds {
		o.e.elem = c.lru.PushFront(o.e)
		c.entries[o.e.name] = o.e
		c.bytes += o.e.size
		mCacheBytes.Add(float64(o.e.size))
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return c, nil
}

func cacheName(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16]) + cacheSuffix
}

// acquire returns the local path of key, fetching it once however many
// callers ask at the same time, and pins it until release is called.
func (c *cache) acquire(ctx context.Context, key string) (path string, release func(), err error) {
	name := cacheName(key)
	path = filepath.Join(c.dir, name)
	for {
		c.mu.Lock()
		e := c.entries[name]
		if e == nil {
			e = &entry{name: name, refs: 1, ready: make(chan struct{})}
			c.entries[name] = e
			c.mu.Unlock()
			mCacheGets.WithLabelValues("fetch").Inc()
			size, err := c.fetch(ctx, key, path)
			c.mu.Lock()
			e.err, e.size = err, size
			if err != nil {
				delete(c.entries, name)
			} else {
				e.elem = c.lru.PushFront(e)
				c.bytes += size
				mCacheBytes.Add(float64(size))
				c.evictLocked()
			}
			close(e.ready)
			c.mu.Unlock()
			if err != nil {
				c.release(e)
				return "", nil, err
			}
			return path, func() { c.release(e) }, nil
		}
		e.refs++
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			c.release(e)
			return "", nil, ctx.Err()
		}
		if e.err != nil {
			c.release(e)
			if ctx.Err() == nil && (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) {
				continue // the fetching caller gave up; we have not
			}
			return "", nil, e.err
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back: forget it and fetch again.
			c.mu.Lock()
			e.refs--
			c.dropLocked(e)
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		c.mu.Unlock()
		mCacheGets.WithLabelValues("hit").Inc()
		return path, func() { c.release(e) }, nil
	}
}

// fetch downloads key to a temp file and renames it into place.
func (c *cache) fetch(ctx context.Context, key, path string) (int64, error) {
	f, err := os.CreateTemp(c.dir, "fetch-*.tmp")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	err = c.store.Get(ctx, key, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var st os.FileInfo
		if st, err = os.Stat(tmp); err == nil {
			if err = os.Rename(tmp, path); err == nil {
				return st.Size(), nil
			}
		}
	}
	os.Remove(tmp)
	return 0, err
}

func (c *cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	c.evictLocked()
}

// evictLocked removes unpinned files, least recently used first, while the
// cache is over its size.
func (c *cache) evictLocked() {
	for el := c.lru.Back(); el != nil && c.bytes > c.max; {
		prev := el.Prev()
		if e := el.Value.(*entry); e.refs == 0 {
			c.dropLocked(e)
			mCacheEvict.Inc()
		}
		el = prev
	}
}

func (c *cache) dropLocked(e *entry) {
	if c.entries[e.name] == e {
		delete(c.entries, e.name)
	}
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
		c.bytes -= e.size
		mCacheBytes.Sub(float64(e.size))
	}
	if e.refs == 0 {
		os.Remove(filepath.Join(c.dir, e.name))
	}
}

// usage is the cache's size and file count, for tests and logs.
func (c *cache) usage() (bytes int64, files int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, c.lru.Len()
}

func (c *cache) String() string { return fmt.Sprintf("cache %s (max %d bytes)", c.dir, c.max) }
