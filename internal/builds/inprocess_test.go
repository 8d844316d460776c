package builds_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// builder is an in-process Builder that writes nothing: it reports rows
// in one object, or fails, or blocks until released.
type builder struct {
	took    time.Duration // how long a build takes
	rows    atomic.Int64
	fail    atomic.Bool
	release chan struct{} // nil: never blocks
	started atomic.Int32
}

func (b *builder) Build(ctx context.Context, c api.ClaimedBuild) (api.BuildComplete, error) {
	b.started.Add(1)
	if b.took > 0 {
		select {
		case <-time.After(b.took):
		case <-ctx.Done():
			return api.BuildComplete{}, ctx.Err()
		}
	}
	if b.release != nil {
		select {
		case <-b.release:
		case <-ctx.Done():
			return api.BuildComplete{}, ctx.Err()
		}
	}
	if b.fail.Load() {
		return api.BuildComplete{}, errors.New("warehouse said no")
	}
	now := time.Now().UTC()
	return api.BuildComplete{DataAsOf: &now, Partitions: []api.PartitionObject{{Object: c.ObjectPrefix + "/all.parquet", Rows: b.rows.Load(), Bytes: 100, BuildUUID: c.BuildUUID}}}, nil
}

const waitLong = 30 * time.Second

func waitStatus(t *testing.T, f *fx, uuid string, want api.BuildStatus) store.PreAggBuild {
	t.Helper()
	var b store.PreAggBuild
	wait.For(t, waitLong, func() error {
		b = f.build(uuid)
		if b.Status != want {
			return fmt.Errorf("build %s is %s, want %s", uuid, b.Status, want)
		}
		return nil
	})
	return b
}

// NATS_ENABLED=false: the server builds in its own process through the same
// protocol; a failure keeps the active build; Stop mid-build leaves the
// build queued for the next run, which builds it.
func TestInProcessBuilds(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	f.putModel(orders(semantic.Refresh{}))
	bld := &builder{}
	bld.rows.Store(3)
	s := f.service(builds.Config{NATSEnabled: false}, builds.WithBuilder(bld))
	q, err := s.ScheduleOnce(t.Context())
	if err != nil || len(q) != 1 {
		t.Fatalf("pass = %+v, %v", q, err)
	}
	first := waitStatus(t, f, q[0].BuildUUID, api.BuildActive)
	if first.Rows != 3 || first.DataAsOf == nil || len(f.outbox()) != 0 {
		t.Fatalf("in-process build = %+v (outbox %d); want 3 rows, dataAsOf, nothing published", first, len(f.outbox()))
	}

	bld.fail.Store(true)
	b, _ := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
	if got := waitStatus(t, f, b.BuildUUID, api.BuildFailed); got.Error != "warehouse said no" {
		t.Fatalf("failed build error %q", got.Error)
	}
	if a := f.active(); len(a) != 1 || a[0].BuildUUID != first.BuildUUID {
		t.Fatalf("active after a failure = %+v", a)
	}

	// A build running when the service stops is queued again; the next
	// service (a restarted server) builds it.
	bld.fail.Store(false)
	block := &builder{release: make(chan struct{})}
	block.rows.Store(4)
	s2 := f.service(builds.Config{NATSEnabled: false}, builds.WithBuilder(block))
	b, _ = s2.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
	wait.Until(t, waitLong, "the build to start", func() bool { return block.started.Load() == 1 })
	s2.Stop()
	if got := f.build(b.BuildUUID); got.Status != api.BuildQueued {
		t.Fatalf("build after Stop is %s, want queued", got.Status)
	}
	if a := f.active(); len(a) != 1 || a[0].BuildUUID != first.BuildUUID {
		t.Fatalf("active after Stop = %+v", a)
	}
	bld.rows.Store(9)
	s3 := f.service(builds.Config{NATSEnabled: false, RedeliverAfter: time.Second}, builds.WithBuilder(bld))
	f.clock.Add(2 * time.Second)
	if _, n, err := s3.ReapOnce(t.Context(), nil); err != nil || n != 1 {
		t.Fatalf("reap after restart = %d, %v; want the queued build started", n, err)
	}
	if got := waitStatus(t, f, b.BuildUUID, api.BuildActive); got.Rows != 9 {
		t.Fatalf("rebuilt = %+v", got)
	}
}

// A build that runs longer than the time allowed to record its outcome is
// still recorded: that bound starts when the build ends (a 10M-row build
// was re-run forever when it started with the build).
func TestInProcessSlowBuildIsRecorded(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	f.putModel(orders(semantic.Refresh{}))
	bld := &builder{took: 600 * time.Millisecond}
	bld.rows.Store(5)
	s := f.service(builds.Config{NATSEnabled: false, RecordTimeout: 200 * time.Millisecond}, builds.WithBuilder(bld))
	q, err := s.ScheduleOnce(t.Context())
	if err != nil || len(q) != 1 {
		t.Fatalf("pass = %+v, %v", q, err)
	}
	if got := waitStatus(t, f, q[0].BuildUUID, api.BuildActive); got.Rows != 5 || bld.started.Load() != 1 {
		t.Fatalf("slow build = %+v after %d runs; want active with 5 rows, run once", got, bld.started.Load())
	}
}

// Without a builder (the engine failed to open) an in-process build fails
// with a message saying so, rather than hanging queued.
func TestInProcessWithoutBuilder(t *testing.T) {
	t.Parallel()
	f := newFx(t, "sqlite")
	f.putModel(orders(semantic.Refresh{}))
	s := f.service(builds.Config{NATSEnabled: false})
	b, err := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	if got := waitStatus(t, f, b.BuildUUID, api.BuildFailed); got.Error == "" {
		t.Fatal("no error recorded")
	}
}
