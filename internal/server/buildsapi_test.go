package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker/preaggs"
)

// apiCode is an API error's code ("" for none or a transport error).
func apiCode(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// The build endpoints through HTTP (NATS path): refresh, status, history,
// the worker protocol with its conflicts, and the job on the
// PRE_AGGREGATE_QUERY_JOBS stream.
func TestBuildsAPI(t *testing.T) {
	t.Parallel()
	db := pgtest.NewSchema(t)
	id := fmt.Sprint(time.Now().UnixNano())
	h := servertest.Start(t, func(c *config.Server) {
		c.DatabaseURL = db
		c.Query.NATSEnabled = true
		c.Query.ResultsDir = t.TempDir()
		c.Query.Stream, c.Query.Subject, c.Query.Consumer = "WQ_"+id, "wq"+id+".jobs", "wq_"+id
		c.PreAgg.Stream, c.PreAgg.Consumer = "PA_"+id, "pa_"+id
		c.PreAgg.QuerySubject, c.PreAgg.BuildSubject = "pa"+id+".query", "pa"+id+".build"
	})
	ctx := t.Context()
	if _, err := h.API.ProjectPut(ctx, "shop", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	// The model goes straight into the server's database.
	_, _, m := putDailyModel(t, db)
	var err error

	// The scheduler queues the definition build by itself.
	var list []api.PreAggInfo
	wait.For(t, 30*time.Second, func() error {
		list, err = h.API.PreAggregates(ctx, "shop")
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].Last == nil {
			return fmt.Errorf("list = %+v, want the definition build", list)
		}
		return nil
	})
	first := list[0].Last
	if first.Trigger != "definition" || first.Status != api.BuildQueued || list[0].Active != nil || list[0].DefHash != semantic.PreAggHash(&m, &m.PreAggregates[0]) {
		t.Fatalf("status = %+v, last %+v", list[0], first)
	}
	// A refresh while it is queued returns it.
	r, err := h.API.PreAggRefresh(ctx, "shop", "orders", "daily")
	if err != nil || r.BuildUUID != first.BuildUUID || r.Status != api.BuildQueued {
		t.Fatalf("refresh = %+v, %v; want the queued build %s", r, err, first.BuildUUID)
	}
	// Its job reached the stream.
	wait.For(t, 30*time.Second, func() error {
		s, err := h.JS.Stream(ctx, "PA_"+id)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter("pa"+id+".build"))
		if err != nil {
			return err
		}
		if info.State.Subjects["pa"+id+".build"] == 0 {
			return errors.New("no build job on the stream yet")
		}
		return nil
	})

	c, err := h.API.BuildClaim(ctx, first.BuildUUID, "w1")
	if err != nil || c.Plan.SQL == "" || c.ObjectPrefix != "shop/orders/daily/"+first.BuildUUID || c.MaxRows != int64(config.DefaultPreAggMaxRows) {
		t.Fatalf("claim = %+v, %v", c, err)
	}
	if _, err := h.API.BuildClaim(ctx, first.BuildUUID, "w2"); apiCode(err) != "claim_conflict" {
		t.Fatalf("second claim = %v, want claim_conflict", err)
	}
	if err := h.API.BuildHeartbeat(ctx, first.BuildUUID, "w2"); apiCode(err) != "state_conflict" {
		t.Fatalf("heartbeat by a non-holder = %v, want state_conflict", err)
	}
	if err := h.API.BuildHeartbeat(ctx, first.BuildUUID, "w1"); err != nil {
		t.Fatal(err)
	}
	asOf := time.Now().UTC().Truncate(time.Millisecond)
	obj := api.PartitionObject{Object: c.ObjectPrefix + "/all.parquet", Rows: 12, Bytes: 345, BuildUUID: first.BuildUUID}
	if err := h.API.BuildComplete(ctx, first.BuildUUID, "w1", api.BuildComplete{Partitions: []api.PartitionObject{obj}, DataAsOf: &asOf}); err != nil {
		t.Fatal(err)
	}
	b, err := h.API.PreAggBuild(ctx, "shop", first.BuildUUID)
	if err != nil || b.Status != api.BuildActive || b.Rows != 12 || b.Bytes != 345 || b.BuiltAt == nil || b.DataAsOf == nil || !b.DataAsOf.Equal(asOf) || len(b.Partitions) != 1 {
		t.Fatalf("build = %+v, %v", b, err)
	}

	// A failing refresh keeps the active build; its error shows.
	r, err = h.API.PreAggRefresh(ctx, "shop", "orders", "daily")
	if err != nil || r.BuildUUID == first.BuildUUID || r.Trigger != "manual" {
		t.Fatalf("refresh = %+v, %v", r, err)
	}
	if _, err := h.API.BuildClaim(ctx, r.BuildUUID, "w1"); err != nil {
		t.Fatal(err)
	}
	if err := h.API.BuildFail(ctx, r.BuildUUID, "w1", "warehouse: out of memory"); err != nil {
		t.Fatal(err)
	}
	list, err = h.API.PreAggregates(ctx, "shop")
	if err != nil || list[0].Active == nil || list[0].Active.BuildUUID != first.BuildUUID || !strings.Contains(list[0].LastError, "out of memory") {
		t.Fatalf("status after a failed refresh = %+v, %v", list, err)
	}
	builds, err := h.API.PreAggBuilds(ctx, "shop", "orders", "daily", 10)
	if err != nil || len(builds) != 2 || builds[0].BuildUUID != r.BuildUUID || builds[0].Status != api.BuildFailed || builds[1].Status != api.BuildActive {
		t.Fatalf("history = %+v, %v", builds, err)
	}

	// Errors.
	for _, tc := range []struct {
		what string
		err  error
		code string
	}{
		{"refresh of an undeclared pre-aggregate", refreshErr(h.API.PreAggRefresh(ctx, "shop", "orders", "weekly")), "preaggregate_not_found"},
		{"refresh on an unknown model", refreshErr(h.API.PreAggRefresh(ctx, "shop", "customers", "daily")), "model_not_found"},
		{"refresh in an unknown project", refreshErr(h.API.PreAggRefresh(ctx, "nope", "orders", "daily")), "project_not_found"},
		{"an unknown build", buildErr(h.API.PreAggBuild(ctx, "shop", "nope")), "build_not_found"},
		{"a claim without worker_id", buildErr2(h.API.BuildClaim(ctx, r.BuildUUID, "")), "bad_request"},
		{"a complete by a non-holder", h.API.BuildComplete(ctx, r.BuildUUID, "w9", api.BuildComplete{}), "state_conflict"},
	} {
		if got := apiCode(tc.err); got != tc.code {
			t.Errorf("%s: %v, want %s", tc.what, tc.err, tc.code)
		}
	}
	resp, err := http.Get(h.Srv.URL() + "/api/v2/projects/shop/preaggregates/builds?limit=0")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("limit=0: HTTP %d, want 400", resp.StatusCode)
	}
}

func refreshErr(_ api.RefreshStarted, err error) error { return err }
func buildErr(_ api.PreAggBuild, err error) error      { return err }
func buildErr2(_ api.ClaimedBuild, err error) error    { return err }

// The in-process path end to end (NATS_ENABLED=false): the server's
// scheduler builds the new pre-aggregate with its own engine, a matching
// metric query is served from that build with the warehouse's answer, and
// after the warehouse changes a refresh promotes a new build that the next
// query is served from.
func TestPreAggInProcessEndToEnd(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	ctx := t.Context()
	active := func(not string) *api.PreAggBuild {
		t.Helper()
		var a *api.PreAggBuild
		wait.For(t, 60*time.Second, func() error {
			list, err := f.h.API.PreAggregates(ctx, f.project)
			if err != nil {
				return err
			}
			for _, p := range list {
				if p.Model == "orders" && p.Name == "daily_status" && p.Active != nil && p.Active.BuildUUID != not {
					a = p.Active
					return nil
				}
				if p.Model == "orders" && p.LastError != "" {
					return fmt.Errorf("build failed: %s", p.LastError)
				}
			}
			return fmt.Errorf("no new active build of orders/daily_status yet: %+v", list)
		})
		return a
	}
	first := active("")
	if first.Trigger != "definition" || first.Rows == 0 || first.DataAsOf == nil || first.BuiltAt == nil {
		t.Fatalf("first build = %+v", first)
	}
	counts := func(sub api.Submitted, build string) map[string]float64 {
		t.Helper()
		pa := sub.CacheMetadata.PreAggregate
		if !pa.Hit || pa.BuildUUID != build || pa.Name != "daily_status" {
			t.Fatalf("submit's preAggregate = %+v (reason %+v), want a hit on build %s", pa, pa.Reason, build)
		}
		p := waitMetric(t, f.h.API, f.project, sub.QueryUUID, 1, 10)
		if p.Status != "ready" || p.CacheMetadata == nil || p.CacheMetadata.PreAggregate == nil || !p.CacheMetadata.PreAggregate.Hit {
			t.Fatalf("poll = %+v", p)
		}
		out := map[string]float64{}
		for _, r := range p.Rows {
			out[fmt.Sprint(r["orders_status"])] = num(t, r["orders_order_count"])
		}
		return out
	}
	got := counts(f.submit(t, byStatus(), nil), first.BuildUUID)
	for _, st := range []string{"new", "paid", "shipped"} {
		if want := float64(warehouseScalar(t, f.whURL, "select count(*) from orders where status = '"+st+"'")); got[st] != want {
			t.Fatalf("served %s = %v, warehouse has %v (all %v)", st, got[st], want, got)
		}
	}

	conn, err := pgx.Connect(ctx, f.whURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "insert into orders values (1000, 'paid', 1, true, timestamp '2024-03-01')"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	r, err := f.h.API.PreAggRefresh(ctx, f.project, "orders", "daily_status")
	if err != nil || r.Trigger != "manual" {
		t.Fatalf("refresh = %+v, %v", r, err)
	}
	second := active(first.BuildUUID)
	if second.BuildUUID != r.BuildUUID {
		t.Fatalf("active = %s, want the refresh's build %s", second.BuildUUID, r.BuildUUID)
	}
	got = counts(f.submit(t, byStatus(), func(s *api.MetricQuerySubmit) { s.InvalidateCache = true }), second.BuildUUID)
	if want := float64(warehouseScalar(t, f.whURL, "select count(*) from orders where status = 'paid'")); got["paid"] != want {
		t.Fatalf("after the refresh paid = %v, want %v", got["paid"], want)
	}
}

// The NATS path end to end: the definition build goes out on
// PRE_AGGREGATE_QUERY_JOBS to a real pre-aggregate worker, which builds it
// into the JetStream object store; a matching metric query is then served
// by that worker from the build with the warehouse's answer.
func TestPreAggNATSEndToEnd(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, true)
	ctx := t.Context()
	cfg := f.h.Cfg
	w, err := preaggs.New(ctx, preaggs.Config{NATS: cfg.NATS.Bus("test-preagg-worker"), Stream: cfg.PreAgg.Stream,
		QuerySubject: cfg.PreAgg.QuerySubject, BuildSubject: cfg.PreAgg.BuildSubject, Consumer: cfg.PreAgg.Consumer,
		Storage: cfg.NATS.Storage, Bucket: cfg.PreAgg.Bucket, Engine: engine.Config{MemoryLimit: "256MB", Threads: 1, CacheDir: t.TempDir()},
		BuildConcurrency: 1, ServerURL: f.h.Srv.URL(), WorkerID: "pw-1", Concurrency: 4, ShutdownGrace: 5 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var active *api.PreAggBuild
	wait.For(t, 60*time.Second, func() error {
		list, err := f.h.API.PreAggregates(ctx, f.project)
		if err != nil {
			return err
		}
		for _, p := range list {
			if p.Model == "orders" && p.Active != nil {
				active = p.Active
				return nil
			}
			if p.Model == "orders" && p.LastError != "" {
				return fmt.Errorf("build failed: %s", p.LastError)
			}
		}
		return fmt.Errorf("no active build yet: %+v", list)
	})
	if active.WorkerID != "pw-1" || active.Rows == 0 || len(active.Partitions) != 1 || !strings.HasPrefix(active.Partitions[0].Object, "shop/orders/daily_status/"+active.BuildUUID+"/") {
		t.Fatalf("active = %+v", active)
	}
	sub := f.submit(t, byStatus(), nil)
	if pa := sub.CacheMetadata.PreAggregate; !pa.Hit || pa.BuildUUID != active.BuildUUID {
		t.Fatalf("submit = %+v (reason %+v), want a hit on %s", pa, pa.Reason, active.BuildUUID)
	}
	p := waitMetric(t, f.h.API, f.project, sub.QueryUUID, 1, 10)
	if p.Status != "ready" || len(p.Rows) != 3 || !p.CacheMetadata.PreAggregate.Hit {
		t.Fatalf("poll = %+v", p)
	}
	for _, r := range p.Rows {
		st := fmt.Sprint(r["orders_status"])
		if want := float64(warehouseScalar(t, f.whURL, "select count(*) from orders where status = '"+st+"'")); num(t, r["orders_order_count"]) != want {
			t.Fatalf("served %s = %v, warehouse has %v", st, r["orders_order_count"], want)
		}
	}
}

// putDailyModel writes model orders, with its pre-aggregate daily, straight
// into the database at db of a server whose project is "shop", and returns
// a store on that database, the project and the model.
func putDailyModel(t *testing.T, db string) (*store.Store, store.Project, semantic.Model) {
	t.Helper()
	ctx := t.Context()
	drv, err := pgdriver.Open(ctx, db, pgdriver.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drv.Close() })
	st := store.New(drv, store.Options{})
	p, err := store.ReadValue(ctx, st, func(q store.Querier) (store.Project, error) { return q.ProjectGet(ctx, "shop") })
	if err != nil {
		t.Fatal(err)
	}
	m := semantic.Model{Name: "orders", Table: "orders",
		Dimensions:    []semantic.Dimension{{Name: "status", Type: semantic.DimString}, {Name: "created_at", Type: semantic.DimTimestamp}},
		Metrics:       []semantic.Metric{{Name: "revenue", Type: semantic.MetricSum, SQL: "amount"}},
		PreAggregates: []semantic.PreAggregate{{Name: "daily", Dimensions: []string{"status"}, Metrics: []string{"revenue"}, TimeDimension: "created_at", Granularity: semantic.GrainDay}}}
	def, _ := json.Marshal(m)
	if err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		return tx.ModelPut(ctx, store.SemanticModel{ProjectID: p.ProjectID, Name: "orders", Definition: def, Hash: semantic.ModelHash(&m), Source: "test", UpdatedAt: time.Now().UTC()})
	}); err != nil {
		t.Fatal(err)
	}
	return st, p, m
}
