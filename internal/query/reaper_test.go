package query

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/results"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
)

// reapFixture is a Service on a throwaway SQLite store, for the reaper's
// passes one at a time.
type reapFixture struct {
	t     *testing.T
	s     *Service
	st    *store.Store
	now   time.Time
	wakes atomic.Int32
}

func newReapFixture(t *testing.T, natsEnabled bool) *reapFixture {
	t.Helper()
	st := sqlitetest.Store(t)
	res, err := results.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &reapFixture{t: t, st: st, now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	f.s = New(Config{NATSEnabled: natsEnabled, QueueTimeout: time.Minute, RedeliverAfter: 10 * time.Second, StaleWorkerAfter: 30 * time.Second},
		st, ids.New(1), nil, res, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { f.wakes.Add(1) })
	f.s.nowFn = func() time.Time { return f.now }
	return f
}

// add inserts a query created age ago with status, then applies upd.
func (f *reapFixture) add(uuid string, status api.QueryStatus, age time.Duration, upd store.QueryUpdate) {
	f.t.Helper()
	created := f.now.Add(-age)
	err := f.st.Do(f.t.Context(), 0, func(ctx context.Context, tx store.Tx) error {
		if err := tx.QueryInsert(ctx, store.Query{QueryUUID: uuid, SQL: "select 1", Lane: LaneInteractive, Status: status,
			PublishedAt: &created, CreatedAt: created, UpdatedAt: created}); err != nil {
			return err
		}
		_, err := tx.QueryTransition(ctx, uuid, []api.QueryStatus{status}, status, upd, created)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *reapFixture) get(uuid string) store.Query {
	f.t.Helper()
	q, err := store.ReadValue(f.t.Context(), f.st, func(q store.Querier) (store.Query, error) { return q.QueryGet(f.t.Context(), uuid) })
	if err != nil {
		f.t.Fatal(err)
	}
	return q
}

func TestReapExpireQueued(t *testing.T) {
	t.Parallel()
	f := newReapFixture(t, true)
	started := f.now.Add(-time.Hour)
	f.add("old", api.QueryQueued, 2*time.Minute, store.QueryUpdate{})
	f.add("young", api.QueryQueued, 10*time.Second, store.QueryUpdate{})
	f.add("rerun", api.QueryQueued, 2*time.Minute, store.QueryUpdate{StartedAt: &started})
	n, err := f.s.ExpireQueued(t.Context(), f.now)
	if err != nil || n != 1 {
		t.Fatalf("ExpireQueued = %d, %v; want 1 (only the query that waited past the queue timeout)", n, err)
	}
	for uuid, want := range map[string]api.QueryStatus{"old": api.QueryExpired, "young": api.QueryQueued, "rerun": api.QueryQueued} {
		if got := f.get(uuid).Status; got != want {
			t.Errorf("%s is %s, want %s", uuid, got, want)
		}
	}
}

func TestReapRequeueStale(t *testing.T) {
	t.Parallel()
	f := newReapFixture(t, true)
	w := "w1"
	beat := f.now.Add(-5 * time.Second)
	f.add("silent", api.QueryExecuting, 2*time.Minute, store.QueryUpdate{WorkerID: &w})
	f.add("alive", api.QueryExecuting, 2*time.Minute, store.QueryUpdate{WorkerID: &w, PublishedAt: &beat})
	n, err := f.s.RequeueStale(t.Context(), f.now)
	if err != nil || n != 1 {
		t.Fatalf("RequeueStale = %d, %v; want 1 (only the query whose worker went silent)", n, err)
	}
	if q := f.get("silent"); q.Status != api.QueryQueued || q.WorkerID != "" || q.Publishes != 1 {
		t.Errorf("silent query after RequeueStale = %s worker %q publishes %d; want queued, no worker, published once more", q.Status, q.WorkerID, q.Publishes)
	}
	if q := f.get("alive"); q.Status != api.QueryExecuting || q.WorkerID != w {
		t.Errorf("heartbeating query after RequeueStale = %s worker %q; want it left executing for %s", q.Status, q.WorkerID, w)
	}
}

func TestReapRenotifyLost(t *testing.T) {
	t.Parallel()
	f := newReapFixture(t, true)
	f.add("lost", api.QueryQueued, 20*time.Second, store.QueryUpdate{})
	f.add("fresh", api.QueryQueued, 2*time.Second, store.QueryUpdate{})
	n, err := f.s.RenotifyLost(t.Context(), f.now, 10*time.Second)
	if err != nil || n != 1 {
		t.Fatalf("RenotifyLost = %d, %v; want 1", n, err)
	}
	if q := f.get("lost"); q.Publishes != 1 || q.PublishedAt == nil || !q.PublishedAt.Equal(f.now) {
		t.Errorf("lost query publishes %d at %v; want re-published now", q.Publishes, q.PublishedAt)
	}
	if q := f.get("fresh"); q.Publishes != 0 {
		t.Errorf("fresh query re-published %d times, want 0", q.Publishes)
	}
	// Just re-notified: not lost again.
	if n, err := f.s.RenotifyLost(t.Context(), f.now, 10*time.Second); err != nil || n != 0 {
		t.Fatalf("second RenotifyLost = %d, %v; want 0", n, err)
	}
}

func TestReapOnceRunsThePassesAndWakesTheRelay(t *testing.T) {
	t.Parallel()
	f := newReapFixture(t, true)
	w := "w1"
	f.add("old", api.QueryQueued, 2*time.Minute, store.QueryUpdate{})
	f.add("silent", api.QueryExecuting, 2*time.Minute, store.QueryUpdate{WorkerID: &w})
	f.add("lost", api.QueryQueued, 20*time.Second, store.QueryUpdate{})
	expired, renotified, err := f.s.ReapOnce(t.Context(), nil)
	if err != nil || expired != 1 || renotified != 2 {
		t.Fatalf("ReapOnce = %d expired, %d re-notified, %v; want 1, 2", expired, renotified, err)
	}
	if f.wakes.Load() != 1 {
		t.Fatalf("relay woken %d times, want once", f.wakes.Load())
	}

	// In-process mode has no notifications: only the expiry pass runs.
	g := newReapFixture(t, false)
	g.add("old", api.QueryQueued, 2*time.Minute, store.QueryUpdate{})
	g.add("lost", api.QueryQueued, 20*time.Second, store.QueryUpdate{})
	if expired, renotified, err := g.s.ReapOnce(t.Context(), nil); err != nil || expired != 1 || renotified != 0 {
		t.Fatalf("in-process ReapOnce = %d, %d, %v; want 1 expired, none re-notified", expired, renotified, err)
	}
}
