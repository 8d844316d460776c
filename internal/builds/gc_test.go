package builds_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/semantic"
)

// The objects of a replaced build are deleted after the grace, except
// those the active build still lists (partitions a window build kept), and
// never while a build of the pre-aggregate is queued or building.
func TestCollectDeletesReplacedObjects(t *testing.T) {
	eachStore(t, func(t *testing.T, kind string) {
		f := newFx(t, kind)
		dir, err := storage.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		f.putModel(orders(semantic.Refresh{Cron: "0 * * * *", PartitionBy: semantic.GrainDay, UpdateWindow: semantic.Duration(24 * time.Hour)}))
		s := f.service(builds.Config{NATSEnabled: true, GCGrace: 10 * time.Minute},
			builds.WithObjects(func(context.Context) (storage.Store, error) { return dir, nil }))
		put := func(objs []api.PartitionObject) {
			t.Helper()
			for _, o := range objs {
				if _, err := dir.Put(t.Context(), o.Object, strings.NewReader("parquet")); err != nil {
					t.Fatal(err)
				}
			}
		}
		exists := func(objs []api.PartitionObject) []bool {
			t.Helper()
			var out []bool
			for _, o := range objs {
				err := dir.Get(t.Context(), o.Object, io.Discard)
				if err != nil && !errors.Is(err, storage.ErrNotFound) {
					t.Fatal(err)
				}
				out = append(out, err == nil)
			}
			return out
		}
		complete := func(uuid string, objs []api.PartitionObject) {
			t.Helper()
			if b, err := s.Complete(t.Context(), uuid, "w1", 0, api.BuildComplete{Partitions: objs}); err != nil || b.Status != api.BuildActive {
				t.Fatalf("complete %s: %s %v", uuid, b.Status, err)
			}
		}
		collect := func(want int) {
			t.Helper()
			if n, err := s.Collect(t.Context()); err != nil || n != want {
				t.Fatalf("collect = %d, %v; want %d", n, err, want)
			}
		}

		q, _ := s.ScheduleOnce(t.Context())
		a := q[0].BuildUUID
		if _, err := s.Claim(t.Context(), a, "w1", 0); err != nil {
			t.Fatal(err)
		}
		aObjs := parts(a, 5, "2024-01-08", "2024-01-09", "2024-01-10")
		put(aObjs)
		complete(a, aObjs)

		f.clock.Set(time.Date(2024, 1, 10, 11, 0, 0, 0, time.UTC)) // the window: 2024-01-09 and 2024-01-10
		q, _ = s.ScheduleOnce(t.Context())
		b := q[0].BuildUUID
		c, err := s.Claim(t.Context(), b, "w1", 0)
		if err != nil || !slices.Equal(keysOf(c.Keep), []string{"2024-01-08"}) {
			t.Fatalf("claim = %v, %v", keysOf(c.Keep), err)
		}
		collect(0) // nothing replaced yet
		bNew := parts(b, 6, "2024-01-09", "2024-01-10")
		put(bNew)
		complete(b, append(slices.Clone(c.Keep), bNew...))

		f.clock.Add(9 * time.Minute)
		collect(0) // within the grace
		f.clock.Add(2 * time.Minute)
		collect(2)
		if got := exists(aObjs); !slices.Equal(got, []bool{true, false, false}) {
			t.Fatalf("a's objects exist = %v, want only the kept 2024-01-08", got)
		}
		collect(0) // once

		// A manual full build replaces b; while it builds nothing goes.
		m, _ := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		if _, err := s.Claim(t.Context(), m.BuildUUID, "w1", 0); err != nil {
			t.Fatal(err)
		}
		mObjs := parts(m.BuildUUID, 7, "2024-01-08", "2024-01-09", "2024-01-10")
		put(mObjs)
		complete(m.BuildUUID, mObjs)
		again, _ := s.Trigger(t.Context(), "shop", "orders", "daily", builds.TriggerManual)
		f.clock.Add(time.Hour)
		collect(0) // a build is queued
		if _, err := s.Claim(t.Context(), again.BuildUUID, "w1", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Fail(t.Context(), again.BuildUUID, "w1", 0, "no"); err != nil {
			t.Fatal(err)
		}
		collect(3) // b's two and a's kept one
		if got := exists(append(append(slices.Clone(aObjs[:1]), bNew...), mObjs...)); !slices.Equal(got, []bool{false, false, false, true, true, true}) {
			t.Fatalf("objects exist = %v, want only the active build's", got)
		}
		if got := f.build(b); len(partitionsOf(t, got)) != 0 || got.Rows != 5+12 {
			t.Fatalf("collected build = %+v, want its partitions cleared and its rows kept", got)
		}
	})
}
