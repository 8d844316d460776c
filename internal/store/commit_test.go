package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/wait"
)

type bundle struct {
	st  *store.Store
	ids *ids.Generator
	drv *countingDriver
}

// countingDriver counts transactions, to show that callers share them, and
// savepoints, to show when they are used.
type countingDriver struct {
	store.Driver
	begins     atomic.Int64
	savepoints atomic.Int64
	// sets counts WriteSet calls and setRows their rows; rowInserts
	// counts the single-row writes that reached the driver.
	sets, setRows, rowInserts atomic.Int64
}

func (d *countingDriver) Begin(ctx context.Context) (store.Tx, error) {
	d.begins.Add(1)
	tx, err := d.Driver.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return countingTx{Tx: tx, d: d}, nil
}

type countingTx struct {
	store.Tx
	d *countingDriver
}

func (t countingTx) Savepoint(ctx context.Context, name string) error {
	t.d.savepoints.Add(1)
	return t.Tx.Savepoint(ctx, name)
}

func (t countingTx) WriteSet(ctx context.Context, w *store.Writes) error {
	t.d.sets.Add(1)
	t.d.setRows.Add(int64(w.Len()))
	return t.Tx.WriteSet(ctx, w)
}

func (t countingTx) EventInsert(ctx context.Context, e store.Event) error {
	t.d.rowInserts.Add(1)
	return t.Tx.EventInsert(ctx, e)
}

func (t countingTx) ExecutionInsert(ctx context.Context, e store.Execution) error {
	t.d.rowInserts.Add(1)
	return t.Tx.ExecutionInsert(ctx, e)
}

func drivers(t *testing.T) map[string]func(t *testing.T) store.Driver {
	return map[string]func(t *testing.T) store.Driver{
		"sqlite": func(t *testing.T) store.Driver {
			d, err := sqlitedriver.Open(t.Context(), t.TempDir()+"/t.db")
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			return d
		},
		"postgres": func(t *testing.T) store.Driver { return pgtest.Open(t) },
	}
}

func setup(t *testing.T, open func(t *testing.T) store.Driver) *bundle {
	drv := &countingDriver{Driver: open(t)}
	st := store.New(drv, store.Options{})
	t.Cleanup(func() { st.Close() })
	return &bundle{st: st, ids: ids.New(-1), drv: drv}
}

func (b *bundle) insertExec(t *testing.T, ctx context.Context, tx store.Tx) int64 {
	id := b.ids.Next()
	if err := tx.ExecutionInsert(ctx, execRow(id)); err != nil {
		return 0
	}
	return id
}

// execRow is the execution the group-commit tests insert.
func execRow(id int64) store.Execution {
	return store.Execution{ExecutionID: id, Path: "p", Version: 1, Status: api.ExecRunning, StartedAt: time.Now()}
}

// concurrently runs fn(0) … fn(n-1) at once and waits for them.
func concurrently(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

// countExecs counts the stored executions.
func (b *bundle) countExecs(ctx context.Context) int64 {
	var total int64
	_ = b.st.Read(ctx, func(q store.Querier) error {
		_, total, _ = q.ExecutionList(ctx, store.ExecutionFilter{}, 0, 1)
		return nil
	})
	return total
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	for name, open := range drivers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()

			t.Run("ConcurrentCallersShareTransactions", func(t *testing.T) {
				t.Parallel()
				b := setup(t, open)
				ctx := t.Context()
				const n = 400
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						id := b.ids.Next()
						errs <- b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error { // one shard: maximal sharing
							return tx.ExecutionInsert(ctx, execRow(id))
						})
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				if total := b.countExecs(ctx); total != n {
					t.Fatalf("%d executions stored, want %d", total, n)
				}
				if got := b.drv.begins.Load(); got >= n {
					t.Fatalf("%d transactions for %d concurrent callers: no group commit happened", got, n)
				}
				t.Logf("%d callers, %d transactions", n, b.drv.begins.Load())
			})

			t.Run("SavepointsOnlyAfterAFailure", func(t *testing.T) {
				// Batches run without savepoints until a caller fails;
				// the failed batch re-runs with them, and so do the
				// batches of the next moment.
				t.Parallel()
				b := setup(t, open)
				ctx := t.Context()
				run := func(n int, fail func(i int) bool) {
					concurrently(n, func(i int) {
						id := b.ids.Next()
						err := b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
							if err := tx.ExecutionInsert(ctx, execRow(id)); err != nil {
								return err
							}
							if fail(i) {
								return errors.New("boom")
							}
							return nil
						})
						if (err != nil) != fail(i) {
							t.Errorf("caller %d: err = %v", i, err)
						}
					})
				}
				run(200, func(int) bool { return false })
				if got := b.drv.savepoints.Load(); got != 0 {
					t.Fatalf("%d savepoints for 200 callers that all succeeded, want 0", got)
				}
				if b.drv.begins.Load() >= 200 {
					t.Fatalf("%d transactions for 200 callers: no group commit happened", b.drv.begins.Load())
				}
				run(200, func(i int) bool { return i%10 == 0 })
				if b.drv.savepoints.Load() == 0 {
					t.Fatalf("no savepoints although callers failed in shared batches")
				}
				if total := b.countExecs(ctx); total != 200+180 {
					t.Fatalf("%d executions stored, want %d: a failed caller's work survived or a good one's was lost", total, 380)
				}
			})

			t.Run("AFailedInsertIsItsCallersAlone", func(t *testing.T) {
				// On PostgreSQL inserts are queued and fail only at the
				// caller's Release: the error must still reach that
				// caller, as ErrConflict, and cost nobody else a retry.
				t.Parallel()
				b := setup(t, open)
				ctx := t.Context()
				dup := b.ids.Next()
				if err := b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
					return tx.ExecutionInsert(ctx, execRow(dup))
				}); err != nil {
					t.Fatal(err)
				}
				before := b.drv.begins.Load()
				const n = 90
				concurrently(n, func(i int) {
					id := b.ids.Next()
					if i%3 == 0 {
						id = dup
					}
					err := b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
						return tx.ExecutionInsert(ctx, execRow(id))
					})
					switch {
					case i%3 == 0 && !errors.Is(err, store.ErrConflict):
						t.Errorf("caller %d (duplicate id): err = %v, want ErrConflict", i, err)
					case i%3 != 0 && err != nil:
						t.Errorf("caller %d: %v", i, err)
					}
				})
				if want, total := int64(1+n-n/3), b.countExecs(ctx); total != want {
					t.Fatalf("%d executions stored, want %d", total, want)
				}
				if got := b.drv.begins.Load() - before; got >= n {
					t.Fatalf("%d transactions for %d callers: failed inserts forced every caller into its own transaction", got, n)
				}
			})

			t.Run("OneCallersErrorUndoesOnlyItsOwnWork", func(t *testing.T) {
				t.Parallel()
				b := setup(t, open)
				ctx := t.Context()
				boom := errors.New("boom")
				const n = 100
				var wg sync.WaitGroup
				var okIDs sync.Map
				for i := 0; i < n; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var id int64
						err := b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
							id = b.insertExec(t, ctx, tx)
							if i%2 == 1 {
								return boom // after writing: the write must vanish
							}
							return nil
						})
						switch {
						case i%2 == 1 && !errors.Is(err, boom):
							t.Errorf("caller %d: err = %v, want its own error", i, err)
						case i%2 == 0 && err != nil:
							t.Errorf("caller %d: %v", i, err)
						case i%2 == 0:
							okIDs.Store(id, true)
						}
					}()
				}
				wg.Wait()
				var list []store.Execution
				_ = b.st.Read(ctx, func(q store.Querier) error {
					list, _, _ = q.ExecutionList(ctx, store.ExecutionFilter{}, 0, 1000)
					return nil
				})
				if len(list) != n/2 {
					t.Fatalf("%d executions stored, want %d (only the callers that succeeded)", len(list), n/2)
				}
				for _, e := range list {
					if _, ok := okIDs.Load(e.ExecutionID); !ok {
						t.Fatalf("execution %d of a failed caller was committed", e.ExecutionID)
					}
				}
			})

			t.Run("CancelledCallerContextDoesNotAbortBatch", func(t *testing.T) {
				t.Parallel()
				b := setup(t, open)
				ctx, cancel := context.WithCancel(t.Context())
				var id int64
				err := b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
					cancel() // the caller gives up while its work runs
					id = b.insertExec(t, t.Context(), tx)
					return nil
				})
				if err != nil {
					t.Fatalf("Do = %v, want the queued work to finish", err)
				}
				err = b.st.Read(t.Context(), func(q store.Querier) error {
					_, err := q.ExecutionGet(t.Context(), id)
					return err
				})
				if err != nil {
					t.Fatalf("work of a caller that cancelled after queueing was lost: %v", err)
				}
			})

			t.Run("CallerTimeoutDoesNotRerunOthers", func(t *testing.T) {
				t.Parallel()
				b := setup(t, open)
				var runs atomic.Int64
				short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
				defer cancel()
				release := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { // a slow caller whose own context expires mid-fn
					defer wg.Done()
					_ = b.st.Do(short, 1, func(ctx context.Context, tx store.Tx) error {
						<-release
						b.insertExec(t, ctx, tx)
						return nil
					})
				}()
				time.Sleep(5 * time.Millisecond) // let it take the committer first; correctness does not depend on it
				go func() {
					defer wg.Done()
					if err := b.st.Do(t.Context(), 1, func(ctx context.Context, tx store.Tx) error {
						runs.Add(1)
						b.insertExec(t, ctx, tx)
						return nil
					}); err != nil {
						t.Errorf("second caller: %v", err)
					}
				}()
				<-short.Done()
				close(release)
				wg.Wait()
				if n := runs.Load(); n != 1 {
					t.Fatalf("second caller's function ran %d times, want 1", n)
				}
			})

			t.Run("ClosedStoreRefuses", func(t *testing.T) {
				t.Parallel()
				drv := open(t)
				st := store.New(drv, store.Options{})
				st.Close()
				if err := st.Do(t.Context(), 1, func(context.Context, store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
					t.Fatalf("Do after Close = %v, want ErrClosed", err)
				}
			})
		})
	}
}

// oneBatch runs fn for n callers that all wait in the queue while a first
// caller holds the committer, so that they share the next batch; it
// returns each caller's error.
func (b *bundle) oneBatch(t *testing.T, n int, fn func(i int, ctx context.Context, tx store.Tx) error) []error {
	ctx := t.Context()
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- b.st.Do(ctx, 1, func(context.Context, store.Tx) error {
			close(held)
			<-hold
			return nil
		})
	}()
	<-held
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error { return fn(i, ctx, tx) })
		}()
	}
	wait.Until(t, 10*time.Second, "every caller queued", func() bool { return b.st.Queued() == n })
	close(hold)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	return errs
}

// The callers of a batch send their write-only rows as one set: one
// WriteSet per batch in a plain batch, nothing row by row. A caller with a
// poisoned row makes the batch re-run with savepoints, where it alone
// fails and everyone else's rows commit.
func TestGroupCommitWritesOneSet(t *testing.T) {
	t.Parallel()
	for name, open := range drivers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const n = 40
			events := func(b *bundle, i int, ctx context.Context, tx store.Tx, exec int64) error {
				for k := 0; k < 3; k++ {
					if err := tx.EventInsert(ctx, store.Event{EventID: b.ids.Next(), ExecutionID: exec, EventType: api.EvCommandIssued, CreatedAt: time.Now()}); err != nil {
						return err
					}
				}
				return nil
			}

			t.Run("Plain", func(t *testing.T) {
				t.Parallel()
				b := setup(t, open)
				errs := b.oneBatch(t, n, func(i int, ctx context.Context, tx store.Tx) error {
					id := b.ids.Next()
					if err := tx.ExecutionInsert(ctx, execRow(id)); err != nil {
						return err
					}
					if err := tx.ExecutionTouch(ctx, id, b.ids.Next()); err != nil {
						return err
					}
					// A read of another execution does not write the set.
					if _, err := tx.LockExecution(ctx, -1); !errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("lock of a missing execution: %v", err)
					}
					return events(b, i, ctx, tx, id)
				})
				for i, err := range errs {
					if err != nil {
						t.Fatalf("caller %d: %v", i, err)
					}
				}
				if got := b.drv.sets.Load(); got != 1 {
					t.Errorf("%d WriteSet calls for one batch, want 1", got)
				}
				if got, want := b.drv.setRows.Load(), int64(n*5); got != want {
					t.Errorf("%d rows in sets, want %d", got, want)
				}
				if got := b.drv.rowInserts.Load(); got != 0 {
					t.Errorf("%d single-row inserts reached the driver, want 0", got)
				}
				if got := b.countExecs(t.Context()); got != n {
					t.Fatalf("%d executions stored, want %d", got, n)
				}
			})

			t.Run("PoisonedCallerFailsAlone", func(t *testing.T) {
				t.Parallel()
				b := setup(t, open)
				dup := b.ids.Next()
				if err := b.st.Do(t.Context(), 1, func(ctx context.Context, tx store.Tx) error {
					return tx.ExecutionInsert(ctx, execRow(dup))
				}); err != nil {
					t.Fatal(err)
				}
				errs := b.oneBatch(t, n, func(i int, ctx context.Context, tx store.Tx) error {
					id := b.ids.Next()
					if i == n/2 {
						id = dup // poisoned: the batch learns of it only when its set is written
					}
					if err := tx.ExecutionInsert(ctx, execRow(id)); err != nil {
						return err
					}
					return events(b, i, ctx, tx, id)
				})
				for i, err := range errs {
					switch {
					case i == n/2 && !errors.Is(err, store.ErrConflict):
						t.Errorf("poisoned caller: %v, want ErrConflict", err)
					case i != n/2 && err != nil:
						t.Errorf("caller %d: %v", i, err)
					}
				}
				if got := b.countExecs(t.Context()); got != n {
					t.Fatalf("%d executions stored, want %d (the first and every caller but the poisoned one)", got, n)
				}
				if b.drv.savepoints.Load() == 0 {
					t.Errorf("no savepoints: the failed plain batch did not re-run with them")
				}
			})
		})
	}
}

func BenchmarkGroupCommitSQLite(b *testing.B) {
	drv, err := sqlitedriver.Open(b.Context(), b.TempDir()+"/b.db")
	if err != nil {
		b.Fatal(err)
	}
	if err := drv.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	st := store.New(drv, store.Options{})
	defer st.Close()
	gen := ids.New(-1)
	ctx := b.Context()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := gen.Next()
			if err := st.Do(ctx, id, func(ctx context.Context, tx store.Tx) error {
				return tx.EventInsert(ctx, store.Event{EventID: id, ExecutionID: 1, EventType: api.EvCommandIssued, CreatedAt: time.Now()})
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// AfterCommit hears of every committed caller's events exactly once, and
// never of a caller's work that was rolled back (to its savepoint, or in a
// shared batch that re-ran with savepoints).
func TestAfterCommitSeesOnlyCommittedEvents(t *testing.T) {
	t.Parallel()
	for name, open := range drivers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			heard := map[int64]int{}
			// One committer: hooks run in commit order, so once the last
			// caller's events are heard, every earlier batch's were too.
			st := store.New(open(t), store.Options{Committers: 1, AfterCommit: func(evs []store.Event) {
				mu.Lock()
				defer mu.Unlock()
				for _, e := range evs {
					heard[e.EventID]++
				}
			}})
			t.Cleanup(func() { st.Close() })
			gen := ids.New(-1)
			ctx := t.Context()
			insert := func(fail bool) (int64, error) {
				var evID int64
				err := st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
					execID := gen.Next()
					if err := tx.ExecutionInsert(ctx, execRow(execID)); err != nil {
						return err
					}
					evID = gen.Next()
					if err := tx.EventInsert(ctx, store.Event{EventID: evID, ExecutionID: execID, EventType: api.EvPlaybookStarted, CreatedAt: time.Now()}); err != nil {
						return err
					}
					if fail {
						return errors.New("caller fails after its insert")
					}
					return nil
				})
				return evID, err
			}
			const n = 300
			ok := make([]int64, n)
			rolledBack := make([]int64, n)
			concurrently(n, func(i int) {
				id, err := insert(i%7 == 3)
				switch {
				case i%7 == 3 && err == nil:
					t.Errorf("caller %d: want its error", i)
				case i%7 == 3:
					rolledBack[i] = id
				case err != nil:
					t.Errorf("caller %d: %v", i, err)
				default:
					ok[i] = id
				}
			})
			last, err := insert(false)
			if err != nil {
				t.Fatal(err)
			}
			wait.Until(t, 30*time.Second, "the last caller's event is heard", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return heard[last] == 1
			})
			mu.Lock()
			defer mu.Unlock()
			for i := 0; i < n; i++ {
				if id := ok[i]; id != 0 && heard[id] != 1 {
					t.Errorf("committed event of caller %d heard %d times, want once", i, heard[id])
				}
				if id := rolledBack[i]; id != 0 && heard[id] != 0 {
					t.Errorf("rolled-back event of caller %d heard %d times, want never", i, heard[id])
				}
			}
			want := 1 // the last
			for _, id := range ok {
				if id != 0 {
					want++
				}
			}
			if len(heard) != want {
				t.Errorf("heard %d events, want %d", len(heard), want)
			}
		})
	}
}
