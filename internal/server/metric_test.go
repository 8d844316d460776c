package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// ordersModels declares the test models: orders (with a pre-aggregate by
// day and status), plain (no pre-aggregates) and slow (a query that
// sleeps, to cancel).
const ordersModels = `models:
  - name: orders
    table: orders
    dimensions:
      - {name: status, type: string}
      - {name: paid, type: boolean}
      - {name: amount, type: number}
      - {name: created_at, type: timestamp}
    metrics:
      - {name: order_count, type: count}
      - {name: revenue, type: sum, sql: amount}
    pre_aggregates:
      - name: daily_status
        dimensions: [status]
        metrics: [order_count, revenue]
        time_dimension: created_at
        granularity: day
  - name: plain
    table: orders
    dimensions:
      - {name: status, type: string}
    metrics:
      - {name: order_count, type: count}
  - name: slow
    sql: "select 1 as x from pg_sleep(30)"
    dimensions:
      - {name: x, type: number}
    metrics:
      - {name: n, type: count}
`

// seedOrders creates a fresh PostgreSQL schema with an orders table of
// 600 rows and returns a URL selecting it.
func seedOrders(t *testing.T) string {
	t.Helper()
	url := pgtest.NewSchema(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(t.Context(), `
create table orders (id int primary key, status text not null, amount numeric(10,2), paid boolean, created_at timestamp not null);
insert into orders select n, (array['new','paid','shipped'])[1 + n % 3], (n % 50) + 0.25, n % 2 = 0,
  timestamp '2024-01-01' + n * interval '7 hours' from generate_series(1, 600) as n`)
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// warehouseScalar runs sql on the warehouse and returns its one int.
func warehouseScalar(t *testing.T, url, sql string) int64 {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// metricFixture is a server with the orders project and models.
type metricFixture struct {
	h       *servertest.Harness
	project string
	whURL   string
	id      int64
}

func newMetricFixture(t *testing.T, natsEnabled bool) *metricFixture {
	t.Helper()
	f := &metricFixture{project: "shop", whURL: seedOrders(t)}
	f.h = servertest.Start(t, func(c *config.Server) {
		c.Query.ResultsDir = t.TempDir()
		c.Query.NATSEnabled = natsEnabled
		c.PreAgg.Dir = t.TempDir()
	})
	p, err := f.h.API.ProjectPut(t.Context(), f.project, api.WarehouseConn{Type: "postgres", URL: f.whURL})
	if err != nil {
		t.Fatal(err)
	}
	f.id = p.ProjectID
	put, err := f.h.API.ModelsPut(t.Context(), f.project, []byte(ordersModels))
	if err != nil || strings.Join(put.Models, ",") != "orders,plain,slow" {
		t.Fatalf("models put = %+v, %v", put, err)
	}
	return f
}

func (f *metricFixture) submit(t *testing.T, q semantic.MetricQuery, mod func(*api.MetricQuerySubmit)) api.Submitted {
	t.Helper()
	in := api.MetricQuerySubmit{Query: q}
	if mod != nil {
		mod(&in)
	}
	sub, err := f.h.API.MetricQuerySubmit(t.Context(), f.project, in)
	if err != nil {
		t.Fatalf("submit %+v: %v", q, err)
	}
	if sub.CacheMetadata.PreAggregate == nil {
		t.Fatalf("submit %+v: no cacheMetadata.preAggregate in %+v", q, sub)
	}
	return sub
}

func byStatus() semantic.MetricQuery {
	return semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_status"}, Metrics: []string{"orders_order_count", "orders_revenue"}}
}

// Models through the API: put (YAML), list, get, delete; a bad document
// is 400 invalid_model with each problem's request line.
func TestModelsAPI(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	ctx := t.Context()
	ms, err := f.h.API.Models(ctx, f.project)
	if err != nil || len(ms) != 3 || ms[0].Name != "orders" || len(ms[0].PreAggregates) != 1 {
		t.Fatalf("models = %+v, %v", ms, err)
	}
	m, err := f.h.API.Model(ctx, f.project, "orders")
	if err != nil || len(m.Dimensions) != 4 || m.Metrics[1].SQL != "amount" {
		t.Fatalf("model orders = %+v, %v", m, err)
	}
	// Explores list every field id a query can ask for.
	resp, err := f.h.API.HTTP.Get(f.h.Srv.URL() + "/api/v2/projects/shop/explores")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"fieldId":"orders_created_at_month","name":"created_at","type":"date","grain":"month"`,
		`"fieldId":"orders_created_at_hour","name":"created_at","type":"timestamp","grain":"hour"`,
		`"fieldId":"orders_revenue","name":"revenue","type":"sum"`, `"preAggregates":["daily_status"]`} {
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("explores (%d) lack %s: %s", resp.StatusCode, want, body)
		}
	}
	// JSON is accepted too, and replaces the model of the same name.
	json := `{"models": [{"name": "plain", "table": "orders", "dimensions": [{"name": "paid", "type": "boolean"}], "metrics": [{"name": "c", "type": "count"}]}]}`
	if put, err := f.h.API.ModelsPut(ctx, f.project, []byte(json)); err != nil || len(put.Models) != 1 {
		t.Fatalf("JSON put = %+v, %v", put, err)
	}
	if m, err := f.h.API.Model(ctx, f.project, "plain"); err != nil || m.Dimensions[0].Name != "paid" {
		t.Fatalf("replaced model = %+v, %v", m, err)
	}
	if err := f.h.API.ModelDelete(ctx, f.project, "plain"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.API.Model(ctx, f.project, "plain"); client.StatusOf(err) != 404 || apiCode(err) != "model_not_found" {
		t.Fatalf("deleted model: %v, want 404 model_not_found", err)
	}
	if err := f.h.API.ModelDelete(ctx, f.project, "plain"); client.StatusOf(err) != 404 {
		t.Fatalf("deleting it again: %v, want 404", err)
	}
	// Line 5 has an unknown dimension type, line 10 a pre-aggregate over a
	// dimension the model lacks: both are reported, with their lines.
	bad := `models:
  - name: broken
    table: orders
    dimensions:
      - {name: status, type: strang}
    metrics:
      - {name: c, type: count}
    pre_aggregates:
      - name: p
        dimensions: [nope]
        metrics: [c]
`
	_, err = f.h.API.ModelsPut(ctx, f.project, []byte(bad))
	if client.StatusOf(err) != 400 || apiCode(err) != "invalid_model" {
		t.Fatalf("bad models: %v, want 400 invalid_model", err)
	}
	for _, want := range []string{"request:5:", "strang", "request:10:", "nope"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("bad models error %q does not say %q", err, want)
		}
	}
	if _, err := f.h.API.Model(ctx, f.project, "broken"); client.StatusOf(err) != 404 {
		t.Fatalf("a refused document stored its model: %v", err)
	}
	if _, err := f.h.API.ModelsPut(ctx, f.project, []byte("")); apiCode(err) != "invalid_model" {
		t.Fatalf("empty body: %v, want invalid_model", err)
	}
	if _, err := f.h.API.ModelsPut(ctx, "nope", []byte(ordersModels)); client.StatusOf(err) != 404 {
		t.Fatalf("unknown project: %v, want 404", err)
	}
}

// Every 400 of a metric query: unknown model, unknown field (named),
// incompatible filters, bad JSON, bad context.
func TestMetricQueryBadRequests(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	rule := func(field, op string, values ...any) semantic.Filters {
		return semantic.Filters{Dimensions: &semantic.FilterGroup{And: []semantic.FilterItem{{FilterRule: semantic.FilterRule{
			Target: semantic.FilterTarget{FieldID: field}, Operator: semantic.FilterOperator(op), Values: values}}}}}
	}
	cases := []struct {
		name  string
		q     semantic.MetricQuery
		code  string
		names string
	}{
		{"unknown model", semantic.MetricQuery{ExploreName: "nosuch", Metrics: []string{"nosuch_c"}}, "unknown_model", "nosuch"},
		{"no model", semantic.MetricQuery{Metrics: []string{"orders_order_count"}}, "bad_request", "exploreName"},
		{"unknown dimension", semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_colour"}, Metrics: []string{"orders_order_count"}}, "unknown_field", "orders_colour"},
		{"unknown metric", semantic.MetricQuery{ExploreName: "orders", Metrics: []string{"orders_profit"}}, "unknown_field", "orders_profit"},
		{"unknown filter field", semantic.MetricQuery{ExploreName: "orders", Metrics: []string{"orders_order_count"}, Filters: rule("orders_region", "equals", "eu")}, "unknown_field", "orders_region"},
		{"unknown sort field", semantic.MetricQuery{ExploreName: "orders", Metrics: []string{"orders_order_count"}, Sorts: []semantic.Sort{{FieldID: "orders_zzz"}}}, "unknown_field", "orders_zzz"},
		{"greaterThan on a boolean", semantic.MetricQuery{ExploreName: "orders", Metrics: []string{"orders_order_count"}, Filters: rule("orders_paid", "greaterThan", true)}, "invalid_filter", "orders_paid"},
		{"text for a number", semantic.MetricQuery{ExploreName: "orders", Metrics: []string{"orders_order_count"}, Filters: rule("orders_amount", "equals", "abc")}, "invalid_filter", "abc"},
		{"unparsable date", semantic.MetricQuery{ExploreName: "orders", Metrics: []string{"orders_order_count"}, Filters: rule("orders_created_at", "greaterThan", "yesterday-ish")}, "invalid_filter", "yesterday-ish"},
		{"no fields", semantic.MetricQuery{ExploreName: "orders"}, "bad_request", ""},
	}
	for _, c := range cases {
		_, err := f.h.API.MetricQuerySubmit(t.Context(), f.project, api.MetricQuerySubmit{Query: c.q})
		if client.StatusOf(err) != 400 || apiCode(err) != c.code || !strings.Contains(err.Error(), c.names) {
			t.Errorf("%s: %v; want 400 %s naming %q", c.name, err, c.code, c.names)
		}
	}
	if _, err := f.h.API.MetricQuerySubmit(t.Context(), f.project, api.MetricQuerySubmit{Query: byStatus(), Context: "dashboard"}); apiCode(err) != "bad_request" {
		t.Errorf("context dashboard: %v, want bad_request", err)
	}
	if _, err := f.h.API.MetricQuerySubmit(t.Context(), "nope", api.MetricQuerySubmit{Query: byStatus()}); client.StatusOf(err) != 404 {
		t.Errorf("unknown project: %v, want 404", err)
	}
	// Lightdash fields Millrace does not take are refused by name.
	resp, err := f.h.API.HTTP.Post(f.h.Srv.URL()+"/api/v2/projects/shop/query/metric-query", "application/json",
		strings.NewReader(`{"query": {"exploreName": "orders", "metrics": ["orders_order_count"]}, "dateZoom": {"granularity": "MONTH"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("unknown body field: %d, want 400", resp.StatusCode)
	}
}

// waitMetric polls a metric query until it ends; every reply, at every
// status, carries cacheMetadata.preAggregate.
func waitMetric(t *testing.T, c *client.Client, project, uuid string, page, size int) api.QueryPage {
	t.Helper()
	var p api.QueryPage
	wait.For(t, 30*time.Second, func() error {
		var err error
		p, err = c.QueryGet(t.Context(), project, uuid, page, size)
		if err != nil {
			t.Fatal(err)
		}
		if p.CacheMetadata == nil || p.CacheMetadata.PreAggregate == nil {
			t.Fatalf("poll of metric query %s (%s) has no cacheMetadata.preAggregate", uuid, p.Status)
		}
		if p.Status == "pending" || p.Status == "queued" || p.Status == "executing" {
			return fmt.Errorf("query %s did not finish: %s", uuid, p.Status)
		}
		return nil
	})
	return p
}

func num(t *testing.T, v any) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		t.Fatalf("%v (%T) is not a number", v, v)
	}
	return f
}

// In-process (NATS_ENABLED=false), a miss runs on the warehouse with the
// most specific reason on submit, poll and history; results page; a
// resubmit is a cache hit that keeps its reason; cancel works.
func TestMetricQueryInProcessMiss(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	ctx := t.Context()
	// orders_paid is not in the pre-aggregate.
	q := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_paid"}, Metrics: []string{"orders_order_count", "orders_revenue"},
		Sorts: []semantic.Sort{{FieldID: "orders_paid"}}}
	sub := f.submit(t, q, nil)
	pa := sub.CacheMetadata.PreAggregate
	if pa.Hit || pa.Reason == nil || pa.Reason.Code != api.PreAggMissFieldNotCovered || pa.Reason.FieldID != "orders_paid" || pa.Name != "daily_status" {
		t.Fatalf("submit's preAggregate = %+v (reason %+v); want a FIELD_NOT_COVERED miss on orders_paid naming daily_status", pa, pa.Reason)
	}
	p := waitMetric(t, f.h.API, f.project, sub.QueryUUID, 1, 10)
	if p.Status != "ready" || p.TotalResults != 2 || p.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissFieldNotCovered {
		t.Fatalf("poll = %+v", p)
	}
	if p.Rows[0]["orders_paid"] != false || num(t, p.Rows[0]["orders_order_count"]) != 300 || num(t, p.Rows[1]["orders_revenue"]) != float64(warehouseScalar(t, f.whURL, "select sum(amount)::bigint from orders where paid")) {
		t.Fatalf("rows = %v", p.Rows)
	}
	// Resubmitted: a cache hit, ready at once, same routing.
	again := f.submit(t, q, nil)
	if !again.CacheMetadata.CacheHit || again.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissFieldNotCovered {
		t.Fatalf("resubmit = %+v; want a cache hit that keeps the miss reason", again.CacheMetadata)
	}
	// Bypassed, and a model without pre-aggregates.
	byp := f.submit(t, q, func(s *api.MetricQuerySubmit) { no := false; s.UsePreAggregates = &no; s.InvalidateCache = true })
	if byp.CacheMetadata.CacheHit || byp.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissBypassed {
		t.Fatalf("bypassed submit = %+v", byp.CacheMetadata.PreAggregate)
	}
	plain := f.submit(t, semantic.MetricQuery{ExploreName: "plain", Dimensions: []string{"plain_status"}, Metrics: []string{"plain_order_count"}}, nil)
	if plain.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissNone {
		t.Fatalf("model without pre-aggregates: %+v", plain.CacheMetadata.PreAggregate.Reason)
	}
	// Paging: one row per (day, status) at the day grain.
	daily := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_created_at_day", "orders_status"}, Metrics: []string{"orders_order_count"},
		Filters: semantic.Filters{Dimensions: &semantic.FilterGroup{And: []semantic.FilterItem{{FilterRule: semantic.FilterRule{
			Target: semantic.FilterTarget{FieldID: "orders_paid"}, Operator: semantic.OpEquals, Values: []any{true}}}}}},
		Limit: 5000}
	want := warehouseScalar(t, f.whURL, "select count(*) from (select distinct date_trunc('day', created_at), status from orders where paid) as x")
	ds := f.submit(t, daily, func(s *api.MetricQuerySubmit) { s.Context = "background" })
	first := waitMetric(t, f.h.API, f.project, ds.QueryUUID, 1, 100)
	if first.Status != "ready" || first.TotalResults != want || len(first.Rows) != 100 || first.NextPage == nil || *first.NextPage != 2 {
		t.Fatalf("daily page 1 = status %s total %d (want %d) rows %d next %v: %s", first.Status, first.TotalResults, want, len(first.Rows), first.NextPage, first.Error)
	}
	last, err := f.h.API.QueryGet(ctx, f.project, ds.QueryUUID, int(first.TotalPageCount), 100)
	if err != nil || int64(len(last.Rows)) != want-100*(first.TotalPageCount-1) || last.NextPage != nil {
		t.Fatalf("last page = %d rows, %v", len(last.Rows), err)
	}
	// Cancel a query that runs for 30 s.
	slow := f.submit(t, semantic.MetricQuery{ExploreName: "slow", Metrics: []string{"slow_n"}}, nil)
	if err := f.h.API.QueryCancel(ctx, f.project, slow.QueryUUID); err != nil {
		t.Fatal(err)
	}
	if p := waitMetric(t, f.h.API, f.project, slow.QueryUUID, 0, 0); p.Status != "cancelled" {
		t.Fatalf("cancelled metric query = %s", p.Status)
	}
	// History: each metric query with its request and routing; SQL
	// queries without.
	if _, err := f.h.API.QuerySubmit(ctx, f.project, "select 1", "", false); err != nil {
		t.Fatal(err)
	}
	hist, err := f.h.API.QueryHistory(ctx, f.project, 1, 50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]api.QueryHistoryEntry{}
	for _, e := range hist.Queries {
		seen[e.QueryUUID] = e
		if e.SQL == "select 1" && (e.CacheMetadata != nil || e.MetricQuery != nil) {
			t.Errorf("a SQL query's history row has metric fields: %+v", e)
		}
	}
	for uuid, code := range map[string]string{sub.QueryUUID: api.PreAggMissFieldNotCovered, byp.QueryUUID: api.PreAggMissBypassed, slow.QueryUUID: api.PreAggMissNone} {
		e, ok := seen[uuid]
		if !ok || e.CacheMetadata == nil || e.CacheMetadata.PreAggregate == nil || e.CacheMetadata.PreAggregate.Reason.Code != code || e.MetricQuery == nil {
			t.Errorf("history row of %s = %+v; want its metric query and a %s miss", uuid, e, code)
		}
	}
	if e := seen[again.QueryUUID]; !e.CacheHit || !e.CacheMetadata.CacheHit {
		t.Errorf("history row of the cache hit = %+v", e)
	}
}

// activate records an active build of orders.daily_status (as the builds
// service would once a worker finished it) and returns its id.
func (f *metricFixture) activate(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	m, err := f.h.API.Model(ctx, f.project, "orders")
	if err != nil {
		t.Fatal(err)
	}
	uuid := fmt.Sprintf("b-%d", time.Now().UnixNano())
	now := time.Now().UTC().Truncate(time.Microsecond)
	parts := fmt.Sprintf(`[{"key":"","object":"shop/orders/daily_status/%s/all.parquet","rows":525,"bytes":9000,"buildUuid":"%s"}]`, uuid, uuid)
	rows, size := int64(525), int64(9000)
	st := f.h.Srv.Flow().Store()
	err = st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		if err := tx.BuildInsert(ctx, store.PreAggBuild{BuildUUID: uuid, ProjectID: f.id, Model: "orders", PreAggregate: "daily_status",
			DefHash: semantic.PreAggHash(&m, &m.PreAggregates[0]), Status: api.BuildBuilding, Trigger: "manual", WorkerID: "w-build",
			PublishedAt: &now, CreatedAt: now, StartedAt: &now, UpdatedAt: now}); err != nil {
			return err
		}
		_, err := tx.BuildPromote(ctx, uuid, store.BuildUpdate{Partitions: []byte(parts), Rows: &rows, Bytes: &size, DataAsOf: &now, EndedAt: &now}, now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return uuid
}

// subscribe collects the jobs published on subject (core NATS sees what
// JetStream stores).
func subscribe(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// nextJob waits for the job of query uuid on sub.
func nextJob(t *testing.T, sub *nats.Subscription, uuid string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		if j, err := bus.DecodeQueryJob(msg.Data); err == nil && j.Payload.QueryUUID == uuid {
			return
		}
	}
	t.Fatalf("no job for query %s on %s", uuid, sub.Subject)
}

// upload answers a claimed query as a worker would.
func upload(t *testing.T, c *client.Client, uuid, worker, ndjson string) {
	t.Helper()
	if err := c.QueryUpload(t.Context(), uuid, worker, strings.NewReader(ndjson)); err != nil {
		t.Fatal(err)
	}
}

// NATS path: a miss is published on its warehouse lane and claimed with
// no serve plan; a hit is published on the pre-aggregate query subject
// and claimed with its build's objects and DuckDB SQL; a resubmitted hit
// is a cache hit; a worker's fallback sends its query to the warehouse
// with the miss recorded; fallbacks from a worker that does not hold the
// query, or for a warehouse query, are refused.
func TestMetricQueryNATSRouting(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, true)
	ctx := t.Context()
	pc := f.h.Cfg.PreAgg
	conn := &bus.Conn{NC: f.h.NC, JS: f.h.JS, Cfg: f.h.Cfg.NATS.Bus("test")}
	if err := conn.EnsurePreAggStream(ctx, pc.Stream, pc.QuerySubject, pc.BuildSubject, pc.Consumer, 1024); err != nil {
		t.Fatal(err)
	}
	lanes := subscribe(t, f.h.NC, f.h.Cfg.Query.Subject+".>")
	preaggs := subscribe(t, f.h.NC, pc.QuerySubject)

	// No build yet: NO_ACTIVE_MATERIALIZATION, on the warehouse lane.
	miss := f.submit(t, byStatus(), nil)
	if pa := miss.CacheMetadata.PreAggregate; pa.Hit || pa.Reason.Code != api.PreAggMissNoBuild || pa.Name != "daily_status" {
		t.Fatalf("miss = %+v %+v", pa, pa.Reason)
	}
	nextJob(t, lanes, miss.QueryUUID)
	cm, err := f.h.API.QueryClaim(ctx, miss.QueryUUID, "w1")
	if err != nil || cm.PreAggregate != nil || strings.Contains(cm.SQL, "preagg") {
		t.Fatalf("claim of a miss = %+v, %v", cm, err)
	}
	if p, _ := f.h.API.QueryGet(ctx, f.project, miss.QueryUUID, 0, 0); p.Status != "executing" || p.CacheMetadata == nil || p.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissNoBuild {
		t.Fatalf("executing miss poll = %+v", p)
	}
	if err := f.h.API.QueryFallback(ctx, miss.QueryUUID, "w1", api.QueryFallback{Code: api.PreAggMissObjectLost}); client.StatusOf(err) != 409 {
		t.Fatalf("fallback of a warehouse query: %v, want 409", err)
	}

	// An active build: the same query hits it.
	build := f.activate(t)
	hit := f.submit(t, byStatus(), nil)
	pa := hit.CacheMetadata.PreAggregate
	if !pa.Hit || pa.Name != "daily_status" || pa.BuildUUID != build || pa.BuiltAt == nil || pa.DataAsOf == nil || pa.Reason != nil {
		t.Fatalf("hit = %+v", pa)
	}
	nextJob(t, preaggs, hit.QueryUUID)
	ch, err := f.h.API.QueryClaim(ctx, hit.QueryUUID, "w1")
	if err != nil || ch.PreAggregate == nil || ch.PreAggregate.BuildUUID != build || len(ch.PreAggregate.Objects) != 1 ||
		ch.PreAggregate.Objects[0].Object != "shop/orders/daily_status/"+build+"/all.parquet" || !strings.Contains(ch.PreAggregate.SQL, "preagg") || ch.SQL != ch.PreAggregate.SQL {
		t.Fatalf("claim of a hit = %+v, %v", ch, err)
	}
	upload(t, f.h.API, hit.QueryUUID, "w1", `{"columns":[{"name":"orders_status","type":"string"},{"name":"orders_order_count","type":"number"},{"name":"orders_revenue","type":"number"}]}`+"\n"+`["new",200,5050]`+"\n")
	if p := waitMetric(t, f.h.API, f.project, hit.QueryUUID, 0, 0); p.Status != "ready" || !p.CacheMetadata.PreAggregate.Hit || len(p.Rows) != 1 {
		t.Fatalf("ready hit = %+v", p)
	}
	// The same query again: answered from the results cache of the hit.
	again := f.submit(t, byStatus(), nil)
	if !again.CacheMetadata.CacheHit || !again.CacheMetadata.PreAggregate.Hit || again.CacheMetadata.PreAggregate.BuildUUID != build {
		t.Fatalf("resubmitted hit = %+v %+v", again.CacheMetadata, again.CacheMetadata.PreAggregate)
	}

	// Another hit whose worker finds the Parquet gone: it falls back.
	q2 := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_created_at_month"}, Metrics: []string{"orders_order_count"}}
	lost := f.submit(t, q2, nil)
	if !lost.CacheMetadata.PreAggregate.Hit {
		t.Fatalf("month from day = %+v", lost.CacheMetadata.PreAggregate.Reason)
	}
	nextJob(t, preaggs, lost.QueryUUID)
	if _, err := f.h.API.QueryClaim(ctx, lost.QueryUUID, "w1"); err != nil {
		t.Fatal(err)
	}
	if err := f.h.API.QueryFallback(ctx, lost.QueryUUID, "w2", api.QueryFallback{Code: api.PreAggMissObjectLost}); client.StatusOf(err) != 409 {
		t.Fatalf("fallback from a worker that does not hold it: %v, want 409", err)
	}
	if err := f.h.API.QueryFallback(ctx, lost.QueryUUID, "w1", api.QueryFallback{Code: "SOMETHING"}); client.StatusOf(err) != 400 {
		t.Fatalf("fallback with an unknown code: %v, want 400", err)
	}
	if err := f.h.API.QueryFallback(ctx, lost.QueryUUID, "w1", api.QueryFallback{Code: api.PreAggMissObjectLost, Message: "object shop/orders/x is gone"}); err != nil {
		t.Fatal(err)
	}
	p, err := f.h.API.QueryGet(ctx, f.project, lost.QueryUUID, 0, 0)
	if err != nil || p.Status != "queued" || p.CacheMetadata.PreAggregate.Hit || p.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissObjectLost ||
		p.CacheMetadata.PreAggregate.Name != "daily_status" || !strings.Contains(p.CacheMetadata.PreAggregate.Reason.Message, "is gone") {
		t.Fatalf("after fallback: %+v, %v", p, err)
	}
	nextJob(t, lanes, lost.QueryUUID)
	cw, err := f.h.API.QueryClaim(ctx, lost.QueryUUID, "w3")
	if err != nil || cw.PreAggregate != nil || strings.Contains(cw.SQL, "preagg") {
		t.Fatalf("claim after fallback = %+v, %v", cw, err)
	}
	upload(t, f.h.API, lost.QueryUUID, "w3", `{"columns":[{"name":"orders_created_at_month","type":"date"},{"name":"orders_order_count","type":"number"}]}`+"\n"+`["2024-01-01",106]`+"\n")
	done := waitMetric(t, f.h.API, f.project, lost.QueryUUID, 0, 0)
	if done.Status != "ready" || done.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissObjectLost {
		t.Fatalf("fallen-back query = %+v", done)
	}
	// Its result came from the warehouse: the same query, still routed to
	// the build, is not answered from it as a hit.
	if re := f.submit(t, q2, nil); re.CacheMetadata.CacheHit || !re.CacheMetadata.PreAggregate.Hit {
		t.Fatalf("resubmitted after a fallback = %+v %+v; want a fresh pre-aggregate hit, not the warehouse's cached result", re.CacheMetadata, re.CacheMetadata.PreAggregate)
	}
	hist, err := f.h.API.QueryHistory(ctx, f.project, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hist.Queries {
		if e.QueryUUID == lost.QueryUUID && (e.CacheMetadata == nil || e.CacheMetadata.PreAggregate.Reason.Code != api.PreAggMissObjectLost) {
			t.Errorf("history of the fallen-back query = %+v", e.CacheMetadata)
		}
		if e.QueryUUID == hit.QueryUUID && (e.CacheMetadata == nil || !e.CacheMetadata.PreAggregate.Hit) {
			t.Errorf("history of the hit = %+v", e.CacheMetadata)
		}
	}
}

// Models can be declared under a project in MILLRACE_PROJECTS_FILE; a
// model removed from the file is removed at the next start; a bad
// definition fails the start with the file's name and line.
func TestProjectsFileModels(t *testing.T) {
	t.Parallel()
	url := seedOrders(t)
	dir := t.TempDir()
	file := dir + "/projects.yaml"
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	head := "projects:\n  - name: pf\n    warehouse: {type: postgres, url: \"" + url + "\"}\n"
	models := `    models:
      - name: orders
        table: orders
        dimensions:
          - {name: status, type: string}
        metrics:
          - {name: order_count, type: count}
      - name: other
        table: orders
        dimensions:
          - {name: paid, type: boolean}
        metrics:
          - {name: c, type: count}
`
	write(head + models)
	cfg := servertest.Config(t)
	cfg.Query.ResultsDir = t.TempDir()
	cfg.Query.ProjectsFile = file
	cfg.DatabaseURL = "sqlite:" + dir + "/millrace.db"
	h := startConfigured(t, cfg)
	ms, err := h.Models(t.Context(), "pf")
	if err != nil || len(ms) != 2 {
		t.Fatalf("models from the file = %+v, %v", ms, err)
	}
	sub, err := h.MetricQuerySubmit(t.Context(), "pf", api.MetricQuerySubmit{Query: semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_status"}, Metrics: []string{"orders_order_count"}}})
	if err != nil {
		t.Fatal(err)
	}
	if p := waitMetric(t, h.Client, "pf", sub.QueryUUID, 0, 0); p.Status != "ready" || p.TotalResults != 3 {
		t.Fatalf("query of a file model = %+v", p)
	}
	h.close()

	// "other" removed from the file: gone after a restart.
	write(head + strings.SplitAfter(models, "          - {name: order_count, type: count}\n")[0])
	h = startConfigured(t, cfg)
	if ms, err := h.Models(t.Context(), "pf"); err != nil || len(ms) != 1 || ms[0].Name != "orders" {
		t.Fatalf("models after removing one from the file = %+v, %v", ms, err)
	}
	h.close()

	// Line 13: a pre-aggregate over a dimension the model lacks.
	write(head + `    models:
      - name: orders
        table: orders
        dimensions:
          - {name: status, type: string}
        metrics:
          - {name: order_count, type: count}
        pre_aggregates:
          - name: by_nothing
            dimensions: [nope]
            metrics: [order_count]
`)
	_, err = server.New(t.Context(), cfg, discardLog())
	if err == nil {
		t.Fatal("a bad model definition did not fail the start")
	}
	if !regexp.MustCompile(regexp.QuoteMeta(file)+`:1[23]:`).MatchString(err.Error()) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("start error %q does not name %s:12 or :13 and the missing dimension", err, file)
	}
}

// running is a server started from a configuration, with its client.
type running struct {
	*client.Client
	close func()
}

func startConfigured(t *testing.T, cfg config.Server) running {
	t.Helper()
	srv, err := server.New(t.Context(), cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return running{Client: client.New(srv.URL()), close: stop} // stop twice is fine: done stays closed
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
