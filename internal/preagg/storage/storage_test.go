package storage

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/wait"
)

// startNATS runs an embedded JetStream server with its store in a temp dir.
func startNATS(t *testing.T) (*bus.Embedded, jetstream.JetStream) {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := nats.Connect(e.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(bus.ReconnectWaitMin))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return e, js
}

func openObjects(t *testing.T, js jetstream.JetStream, st jetstream.StorageType) *Objects {
	t.Helper()
	o, err := OpenObjects(t.Context(), js, "preagg_test", st, 1)
	if err != nil {
		t.Fatal(err)
	}
	o.stall = 10 * time.Second // a lost request fails sooner in tests, yet a loaded machine is not a stall
	return o
}

// stores gives each test both implementations.
func stores(t *testing.T) map[string]Store {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, js := startNATS(t)
	return map[string]Store{"dir": d, "nats": openObjects(t, js, jetstream.FileStorage)}
}

func get(t *testing.T, s Store, key string) ([]byte, error) {
	t.Helper()
	var buf bytes.Buffer
	err := s.Get(t.Context(), key, &buf)
	return buf.Bytes(), err
}

func TestStoreRoundTrip(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			big := make([]byte, 1<<20+12345) // several JetStream chunks
			rand.Read(big)
			cases := map[string][]byte{
				"p/m/agg/b1/all.parquet":        []byte("hello"),
				"p/m/agg/b1/2024-05-01.parquet": big,
				"p/m/agg/b1/empty.parquet":      {},
				"p/m/agg/b2/ünïcode.parquet":    []byte("ü"),
			}
			for k, v := range cases {
				n, err := s.Put(ctx, k, bytes.NewReader(v))
				if err != nil || n != int64(len(v)) {
					t.Fatalf("Put %s: %d, %v", k, n, err)
				}
			}
			for k, v := range cases {
				got, err := get(t, s, k)
				if err != nil || !bytes.Equal(got, v) {
					t.Fatalf("Get %s: %d bytes (want %d), %v", k, len(got), len(v), err)
				}
			}
			if !strings.HasPrefix(s.String(), name+":") {
				t.Errorf("String() = %q", s.String())
			}
			// Absent and deleted objects are ErrNotFound; deleting twice is fine.
			if _, err := get(t, s, "p/m/agg/b1/nope.parquet"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get absent: %v", err)
			}
			for range 2 {
				if err := s.Delete(ctx, "p/m/agg/b1/all.parquet"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := get(t, s, "p/m/agg/b1/all.parquet"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get deleted: %v", err)
			}
			if got, err := get(t, s, "p/m/agg/b1/2024-05-01.parquet"); err != nil || !bytes.Equal(got, big) {
				t.Fatalf("a sibling of a deleted object: %v", err)
			}
		})
	}
}

func TestStoreRefusesBadKeys(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, k := range []string{"", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a\x00b", "a/", strings.Repeat("k", 1025)} {
				if _, err := s.Put(t.Context(), k, strings.NewReader("x")); err == nil {
					t.Errorf("Put(%q) accepted", k)
				}
				if _, err := get(t, s, k); err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%q): %v", k, err)
				}
				if err := s.Delete(t.Context(), k); err == nil {
					t.Errorf("Delete(%q) accepted", k)
				}
			}
		})
	}
}

// failingReader yields some data, then an error: a build that dies mid-upload.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk on fire")
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func TestStoreFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			key := "p/m/agg/b1/all.parquet"
			if _, err := s.Put(ctx, key, &failingReader{n: 300 << 10}); err == nil {
				t.Fatal("a Put whose reader failed succeeded")
			}
			if _, err := get(t, s, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after a failed Put: %v", err)
			}
			// A failed replacement keeps the complete object.
			if _, err := s.Put(ctx, key, strings.NewReader("good")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Put(ctx, key, &failingReader{n: 10}); err == nil {
				t.Fatal("a Put whose reader failed succeeded")
			}
			if got, err := get(t, s, key); err != nil || string(got) != "good" {
				t.Fatalf("after a failed replacement: %q, %v", got, err)
			}
			if d, ok := s.(*Dir); ok {
				var names []string
				filepath.WalkDir(d.root, func(p string, e os.DirEntry, _ error) error {
					if !e.IsDir() {
						names = append(names, e.Name())
					}
					return nil
				})
				if len(names) != 1 {
					t.Fatalf("files left behind: %v", names)
				}
			}
		})
	}
}

// Keys are written once: a reader racing the writer sees the whole object
// or ErrNotFound, never part of it.
func TestStoreConcurrentPutGet(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			data := bytes.Repeat([]byte("abcdefgh"), 100<<10) // 800 KB: several chunks
			const n = 6
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			wg.Go(func() {
				for i := range n {
					if _, err := s.Put(ctx, fmt.Sprintf("k/%d.parquet", i), bytes.NewReader(data)); err != nil {
						errs <- err
					}
				}
			})
			for range 3 {
				wg.Go(func() {
					for i := range 2 * n {
						got, err := get(t, s, fmt.Sprintf("k/%d.parquet", i/2))
						if err != nil && !errors.Is(err, ErrNotFound) {
							errs <- err
						} else if err == nil && !bytes.Equal(got, data) {
							errs <- fmt.Errorf("read a partial object of %d bytes", len(got))
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// An object deleted while a reader downloads it reads as ErrNotFound (or
// whole, if the reader won), promptly: never a hang.
func TestObjectsDeleteDuringGet(t *testing.T) {
	t.Parallel()
	_, js := startNATS(t)
	o := openObjects(t, js, jetstream.FileStorage)
	reader := openObjects(t, js, jetstream.FileStorage)
	reader.stall = 2 * time.Second // it waits for chunks that were purged
	ctx := t.Context()
	data := make([]byte, 4<<20)
	rand.Read(data)
	for i := range 3 {
		key := fmt.Sprintf("d/%d.parquet", i)
		if _, err := o.Put(ctx, key, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			got, err := get(t, reader, key)
			if err == nil && !bytes.Equal(got, data) {
				err = fmt.Errorf("read %d bytes of %d", len(got), len(data))
			}
			done <- err
		}()
		if err := o.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get racing Delete: %v", err)
		}
	}
}

func TestDirPath(t *testing.T) {
	t.Parallel()
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Path("a/b.parquet"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Path of an absent object: %v", err)
	}
	if _, err := d.Put(t.Context(), "a/b.parquet", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	p, err := d.Path("a/b.parquet")
	if err != nil || filepath.Dir(p) != filepath.Join(d.root, "a") {
		t.Fatalf("Path: %q, %v", p, err)
	}
	if _, err := d.Path("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Path of a directory: %v", err)
	}
	// Deleting the last object removes its emptied directories, not the root.
	if err := d.Delete(t.Context(), "a/b.parquet"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.root, "a")); !os.IsNotExist(err) {
		t.Fatalf("empty directory kept: %v", err)
	}
	if _, err := os.Stat(d.root); err != nil {
		t.Fatal(err)
	}
}

func TestOpenDirRemovesLeftoverTemps(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "p", "b"), 0o750)
	os.WriteFile(filepath.Join(root, "p", "b", tmpPrefix+"123"), []byte("half"), 0o640)
	os.WriteFile(filepath.Join(root, "p", "b", "all.parquet"), []byte("whole"), 0o640)
	if _, err := OpenDir(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "p", "b", tmpPrefix+"123")); !os.IsNotExist(err) {
		t.Fatalf("leftover temp file kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "p", "b", "all.parquet")); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(""); err == nil {
		t.Fatal("OpenDir(\"\") accepted")
	}
}

// File storage survives a NATS restart; memory storage loses its objects,
// which read as ErrNotFound, and the next Put makes the bucket again.
func TestObjectsAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, st := range []jetstream.StorageType{jetstream.FileStorage, jetstream.MemoryStorage} {
		t.Run(st.String(), func(t *testing.T) {
			t.Parallel()
			e, js := startNATS(t)
			o := openObjects(t, js, st)
			ctx := t.Context()
			if _, err := o.Put(ctx, "p/m/a/b/all.parquet", strings.NewReader("data")); err != nil {
				t.Fatal(err)
			}
			if err := e.Restart(); err != nil {
				t.Fatal(err)
			}
			// The client reconnects: poll until the store answers.
			var got []byte
			var err error
			wait.For(t, 20*time.Second, func() error {
				if got, err = get(t, o, "p/m/a/b/all.parquet"); err == nil || errors.Is(err, ErrNotFound) {
					return nil
				}
				return err
			})
			if st == jetstream.FileStorage {
				if err != nil || string(got) != "data" {
					t.Fatalf("after a restart: %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("memory object after a restart: %v", err)
			}
			if err := o.Delete(ctx, "p/m/a/b/all.parquet"); err != nil {
				t.Fatalf("Delete in a lost bucket: %v", err)
			}
			if _, err := o.Put(ctx, "p/m/a/b/all.parquet", strings.NewReader("again")); err != nil {
				t.Fatalf("Put after the bucket was lost: %v", err)
			}
			if got, err := get(t, o, "p/m/a/b/all.parquet"); err != nil || string(got) != "again" {
				t.Fatalf("after re-creating the bucket: %q, %v", got, err)
			}
		})
	}
}

// A second handle on the same bucket (another worker) sees the objects.
func TestObjectsSharedBucket(t *testing.T) {
	t.Parallel()
	_, js := startNATS(t)
	a := openObjects(t, js, jetstream.FileStorage)
	b := openObjects(t, js, jetstream.FileStorage)
	if _, err := a.Put(t.Context(), "x/all.parquet", io.LimitReader(rand.Reader, 5000)); err != nil {
		t.Fatal(err)
	}
	if got, err := get(t, b, "x/all.parquet"); err != nil || len(got) != 5000 {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}
