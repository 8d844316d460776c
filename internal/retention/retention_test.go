package retention

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
)

const day = 24 * time.Hour

var drivers = []struct {
	name string
	open func(t *testing.T) store.Driver
}{
	{"sqlite", func(t *testing.T) store.Driver { return sqlitetest.Open(t) }},
	{"postgres", func(t *testing.T) store.Driver { return pgtest.Open(t) }},
}

// syncBuffer is a log destination safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var seq atomic.Int64

// addExecution stores an execution started at start with two events and a
// command; end nil leaves it running.
func addExecution(t *testing.T, d store.Driver, start time.Time, end *time.Time) int64 {
	t.Helper()
	ctx := t.Context()
	id := ids.Floor(start) + seq.Add(1)
	tx, err := d.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tx.ExecutionInsert(ctx, store.Execution{ExecutionID: id, CatalogID: 1, Path: "p", Version: 1, Status: api.ExecRunning, StartedAt: start}))
	for range 2 {
		must(tx.EventInsert(ctx, store.Event{EventID: ids.Floor(start) + seq.Add(1), ExecutionID: id, EventType: "step.enter", CreatedAt: start}))
	}
	cmd := ids.Floor(start) + seq.Add(1)
	must(tx.CommandInsert(ctx, store.Command{EventID: cmd, ExecutionID: id, CommandID: fmt.Sprintf("%d:s:%d", id, cmd), Step: "s",
		Tool: []byte(`{"kind":"noop"}`), CreatedAt: start}))
	if end != nil {
		must(tx.ExecutionFinish(ctx, id, api.ExecCompleted, nil, "", *end))
	}
	must(tx.Commit(ctx))
	return id
}

func exists(t *testing.T, d store.Driver, id int64) bool {
	t.Helper()
	err := d.Read(t.Context(), func(q store.Querier) error { _, err := q.ExecutionGet(t.Context(), id); return err })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// value reads a counter or gauge.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func ptr(t time.Time) *time.Time { return &t }

// TestOffDoesNothing: MILLRACE_RETENTION=0 deletes nothing, and Run
// returns at once rather than waking every interval.
func TestOffDoesNothing(t *testing.T) {
	t.Parallel()
	for _, drv := range drivers {
		t.Run(drv.name, func(t *testing.T) {
			t.Parallel()
			d := drv.open(t)
			now := time.Now().UTC()
			old := addExecution(t, d, now.Add(-400*day), ptr(now.Add(-399*day)))
			s, err := New(Config{}, d, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.RunOnce(t.Context())
			if err != nil || res.Locked || res.Executions != 0 {
				t.Fatalf("RunOnce with retention off = %+v, %v; want nothing done", res, err)
			}
			done := make(chan struct{})
			go func() { s.Run(t.Context()); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run with retention off did not return")
			}
			if !exists(t, d, old) {
				t.Fatal("an execution that ended 399 days ago was deleted with retention off")
			}
			if p, ok := d.(*pgdriver.Driver); ok {
				parts, err := p.EventPartitions(t.Context())
				if err != nil || len(parts) != 1 {
					t.Fatalf("partitions with retention off = %+v, %v; want only the default", parts, err)
				}
			}
		})
	}
}

// TestRunDeletesInBatches: a run deletes every execution that ended
// before the cutoff, Batch per transaction, keeps the others, counts, logs
// and (PostgreSQL) makes the partitions ahead.
func TestRunDeletesInBatches(t *testing.T) {
	t.Parallel()
	for _, drv := range drivers {
		t.Run(drv.name, func(t *testing.T) {
			t.Parallel()
			d := drv.open(t)
			now := time.Now().UTC()
			var old []int64
			for i := range 5 {
				old = append(old, addExecution(t, d, now.Add(-40*day), ptr(now.Add(-39*day+time.Duration(i)*time.Minute))))
			}
			running := addExecution(t, d, now.Add(-40*day), nil)
			recent := addExecution(t, d, now.Add(-40*day), ptr(now.Add(-day)))
			var logs syncBuffer
			s, err := New(Config{Period: 30 * day, Batch: 2, DaysAhead: 2, Now: func() time.Time { return now }}, d,
				slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			before := value(t, mDeleted)
			res, err := s.RunOnce(t.Context())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			if !res.Locked || res.Executions != 5 || res.Batches != 4 || res.Commands != 5 {
				t.Fatalf("RunOnce = %+v; want 5 executions (and their 5 commands) in batches of 2, 2, 1 and an empty one", res)
			}
			if _, ok := d.(store.Partitioner); ok && res.PartitionsCreated != 3 {
				t.Errorf("PartitionsCreated = %d, want 3 (today and 2 ahead)", res.PartitionsCreated)
			}
			for _, id := range old {
				if exists(t, d, id) {
					t.Errorf("execution %d, ended 39 days ago, survived", id)
				}
			}
			if !exists(t, d, running) || !exists(t, d, recent) {
				t.Error("a running or recently ended execution was deleted")
			}
			if got := value(t, mDeleted) - before; got < 5 {
				t.Errorf("millrace_retention_deleted_executions_total rose by %v, want at least 5", got)
			}
			if value(t, mLastRun) <= 0 {
				t.Error("millrace_retention_last_run_timestamp_seconds not set")
			}
			if l := logs.String(); !strings.Contains(l, "retention run") || !strings.Contains(l, "executions_deleted=5") {
				t.Errorf("log = %q, want an INFO line with executions_deleted=5", l)
			}
		})
	}
}

// TestOneServerAtATime: while one process holds the retention lock,
// another's run does nothing.
func TestOneServerAtATime(t *testing.T) {
	t.Parallel()
	a := pgtest.Open(t)
	b, err := pgdriver.Open(t.Context(), pgtest.WithSearchPath(pgtest.URL(), a.Schema()), pgdriver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	now := time.Now().UTC()
	old := addExecution(t, a, now.Add(-40*day), ptr(now.Add(-39*day)))
	release, ok, err := a.RetentionLock(t.Context())
	if err != nil || !ok {
		t.Fatalf("RetentionLock = %v, %v", ok, err)
	}
	s, err := New(Config{Period: 30 * day}, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.RunOnce(t.Context()); err != nil || res.Locked || res.Executions != 0 {
		t.Fatalf("RunOnce while another holds the lock = %+v, %v; want nothing done", res, err)
	}
	release()
	if res, err := s.RunOnce(t.Context()); err != nil || !res.Locked || res.Executions != 1 {
		t.Fatalf("RunOnce after release = %+v, %v; want the old execution deleted", res, err)
	}
	if exists(t, a, old) {
		t.Fatal("the old execution survived")
	}
}
