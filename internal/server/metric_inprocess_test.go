package server_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/wait"
)

// sameValue compares result values across warehouses: numbers by value
// (within 1e-9 relative), everything else by its text.
func sameValue(a, b any) bool {
	fa, ea := strconv.ParseFloat(fmt.Sprint(a), 64)
	fb, eb := strconv.ParseFloat(fmt.Sprint(b), 64)
	if ea == nil && eb == nil {
		d := fa - fb
		if d < 0 {
			d = -d
		}
		scale := max(1, fa, -fa, fb, -fb)
		return d <= 1e-9*scale
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// In-process (NATS_ENABLED=false): once the server has built the
// pre-aggregate itself, a covered query is a hit served by the server's
// DuckDB engine, with the same rows as the warehouse gives it
// (usePreAggregates: false), through the same poll and paging.
func TestMetricQueryInProcessHit(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	ctx := t.Context()
	wait.For(t, 60*time.Second, func() error {
		list, err := f.h.API.PreAggregates(ctx, f.project)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list {
			if p.Model == "orders" && p.Name == "daily_status" && p.Active != nil {
				return nil
			}
			if p.Last != nil && p.Last.Status == api.BuildFailed {
				t.Fatalf("the build of daily_status failed: %s", p.Last.Error)
			}
		}
		return fmt.Errorf("orders.daily_status has no active build yet: %+v", list)
	})
	q := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_created_at_month", "orders_status"},
		Metrics: []string{"orders_order_count", "orders_revenue"}, Limit: 5000}
	hit := f.submit(t, q, nil)
	if pa := hit.CacheMetadata.PreAggregate; !pa.Hit || pa.Name != "daily_status" || pa.BuildUUID == "" || pa.DataAsOf == nil {
		t.Fatalf("submit = %+v (reason %+v); want a hit on daily_status", pa, pa.Reason)
	}
	got := waitMetric(t, f.h.API, f.project, hit.QueryUUID, 1, 500)
	if got.Status != "ready" || !got.CacheMetadata.PreAggregate.Hit {
		t.Fatalf("hit = %s %s %+v", got.Status, got.Error, got.CacheMetadata.PreAggregate)
	}
	byp := f.submit(t, q, func(s *api.MetricQuerySubmit) { no := false; s.UsePreAggregates = &no })
	want := waitMetric(t, f.h.API, f.project, byp.QueryUUID, 1, 500)
	if want.Status != "ready" || want.CacheMetadata.PreAggregate.Hit {
		t.Fatalf("warehouse answer = %s %s", want.Status, want.Error)
	}
	if got.TotalResults != want.TotalResults || got.TotalResults == 0 || len(got.Columns) != len(want.Columns) {
		t.Fatalf("pre-aggregate answer has %d rows %v, the warehouse's %d rows %v", got.TotalResults, got.Columns, want.TotalResults, want.Columns)
	}
	for i := range want.Rows {
		for _, c := range want.Columns {
			if !sameValue(got.Rows[i][c.Name], want.Rows[i][c.Name]) {
				t.Fatalf("row %d column %s: pre-aggregate %v (%T), warehouse %v (%T)", i, c.Name, got.Rows[i][c.Name], got.Rows[i][c.Name], want.Rows[i][c.Name], want.Rows[i][c.Name])
			}
		}
	}
}

// In-process, a hit whose build's Parquet is gone falls back inline: the
// query still ends ready, with the warehouse's rows and the miss
// MATERIALIZATION_MISSING, and a rebuild (trigger missing) starts.
func TestMetricQueryInProcessFallback(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	ctx := t.Context()
	build := f.activate(t) // its object was never written
	q := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_status"}, Metrics: []string{"orders_order_count"}}
	sub := f.submit(t, q, nil)
	if pa := sub.CacheMetadata.PreAggregate; !pa.Hit || pa.BuildUUID != build {
		t.Fatalf("submit = %+v (reason %+v); want a hit on build %s", pa, pa.Reason, build)
	}
	p := waitMetric(t, f.h.API, f.project, sub.QueryUUID, 0, 0)
	pa := p.CacheMetadata.PreAggregate
	if p.Status != "ready" || p.TotalResults != 3 || pa.Hit || pa.Reason == nil || pa.Reason.Code != api.PreAggMissObjectLost || pa.Name != "daily_status" {
		t.Fatalf("after the lost object: %s %s rows %d meta %+v reason %+v", p.Status, p.Error, p.TotalResults, pa, pa.Reason)
	}
	// The rebuild is the "missing" one, or a build already queued when the
	// fallback asked (the model put's first build, on a slow machine):
	// triggerFull never queues a second. Either way a real build replaces
	// the lost one.
	wait.For(t, 90*time.Second, func() error {
		list, err := f.h.API.PreAggregates(ctx, f.project)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list {
			if p.Model == "orders" && p.Name == "daily_status" && p.Active != nil && p.Active.BuildUUID != build {
				return nil
			}
		}
		bs, err := f.h.API.PreAggBuilds(ctx, f.project, "orders", "daily_status", 20)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			if b.Status == api.BuildFailed {
				t.Fatalf("rebuild %s (trigger %s) failed: %s", b.BuildUUID, b.Trigger, b.Error)
			}
		}
		return fmt.Errorf("the lost build %s is still active among %d builds", build, len(bs))
	})
}
