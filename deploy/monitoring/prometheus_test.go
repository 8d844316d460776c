package monitoring_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// binary is the millrace binary, built once for the package.
var binary string

func TestMain(m *testing.M) { proctest.Main(m, &binary) }

// devEnv is the environment of millrace dev: nothing from the caller's
// that would point it elsewhere, queries over NATS (so the warehouse and
// pre-aggregate workers, their streams and consumers exist), and the
// gauges sampled every second.
func devEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || k == "DATABASE_URL" || k == "SERVER_API_URL" ||
			strings.HasPrefix(k, "PRE_AGGREGATE_") || strings.HasPrefix(k, "OTEL_") ||
			(strings.HasPrefix(k, "MILLRACE_") && k != "MILLRACE_TEST_DATABASE_URL") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NATS_ENABLED=true", "MILLRACE_METRICS_INTERVAL_SECONDS=1", "MILLRACE_LOG_LEVEL=warn")
}

// A real Prometheus (Debian's package) scrapes two real `millrace dev`s,
// labelled as two namespaces would label them in Kubernetes:
//
//   - "busy" runs flows (several tools, a failing step), warehouse queries
//     and metric queries (a pre-aggregate hit and misses). Every expression
//     of the dashboard and of the alert rules must evaluate, and return at
//     least one series once its comparisons are neutralized: a metric,
//     label or join that does not exist would leave it empty. Healthy, it
//     must raise no alert, not even pending.
//   - "idle" has no commands worker (--workers 0) and one execution
//     waiting: MillraceNoWorkers must go pending for kind commands there,
//     and only there (its warehouse and pre-aggregate workers run, and
//     the busy namespace's workers must not hide the idle one's absence).
//
// The rules are loaded, and every one must evaluate without error.
func TestPrometheusSeesEveryExpression(t *testing.T) {
	t.Parallel()
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run .ci/run's install step (apt-get install -y --no-install-recommends prometheus)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	busyAddr, busy := startDev(ctx, t, "millrace dev (busy)")
	idleAddr, idle := startDev(ctx, t, "millrace dev (idle)", "--workers", "0")

	// Prometheus: scrape both every second, with the alert rules loaded.
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	promDir := t.TempDir()
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: millrace
    static_configs:
      - {targets: [%q], labels: {namespace: busy}}
      - {targets: [%q], labels: {namespace: idle}}
`, rules, busyAddr, idleAddr)
	if err := os.WriteFile(filepath.Join(promDir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := proctest.FreeAddr(t)
	prom := proctest.Start(t, "prometheus", syscall.SIGTERM, os.Environ(), promBin,
		"--config.file="+filepath.Join(promDir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address="+promAddr)
	promURL := "http://" + promAddr
	wait.For(t, 60*time.Second, func() error {
		if err := prom.Exited(); err != nil {
			t.Fatal(err)
		}
		return httpOK(ctx, promURL+"/-/ready")
	})

	// The idle namespace: one execution nobody will run.
	reg, err := idle.Register(ctx, okPlaybook)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if _, err := idle.Execute(ctx, reg.Path, reg.Version, nil); err != nil {
		t.Fatalf("execute: %v", err)
	}
	generateLoad(ctx, t, busy)

	// Every expression: first as written (it must evaluate), then
	// neutralized until it returns a series.
	queries := append(dashboardQueries(t), alertQueries(t)...)
	deadline := time.Now().Add(90 * time.Second)
	for _, q := range queries {
		if _, err := promQuery(ctx, promURL, grafanaToPromQL(q.expr)); err != nil {
			t.Errorf("%s does not evaluate: %v\n%s", q.name, err, q.expr)
			continue
		}
		expr := neutralize(q.expr)
		if err := waitSeries(ctx, promURL, expr, deadline); err != nil {
			t.Errorf("%s returns no data from millrace dev: %v\n  as run: %s", q.name, err, expr)
		}
	}

	// The load made what the panels are there for.
	for _, expr := range []string{
		`millrace_step_duration_seconds_count{namespace="busy",tool="shell",outcome="failed"}`,
		`millrace_step_duration_seconds_count{namespace="busy",tool="duckdb",outcome="completed"}`,
		`millrace_executions_failed_total{namespace="busy"} > 0`,
		`millrace_pre_aggregate_queries_total{namespace="busy",result="hit",reason=""}`,
		`millrace_pre_aggregate_queries_total{namespace="busy",result="miss",reason="FIELD_NOT_COVERED"}`,
		`millrace_pre_aggregate_queries_total{namespace="busy",result="miss",reason="BYPASSED"}`,
		`millrace_http_request_duration_seconds_count{namespace="busy",code="404"}`,
		`millrace_workers_online{namespace="busy",kind="commands",pool=""} == 2`,
		`millrace_workers_online{namespace="idle",kind="commands",pool=""} == 0`,
		`millrace_nats_consumer_lag_messages{namespace="idle",stream="NOETL_COMMANDS",consumer="noetl_worker_pool"} == 1`,
	} {
		if err := waitSeries(ctx, promURL, expr, deadline); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}

	// The rules as Prometheus evaluates them: no evaluation errors; the
	// idle namespace lacks commands workers, and nothing else is wrong.
	wait.For(t, time.Until(deadline)+10*time.Second, func() error { return rulesHealthy(ctx, promURL, len(alertQueries(t))) })
	wait.For(t, 30*time.Second, func() error {
		active, err := promAlerts(ctx, promURL)
		if err != nil {
			return err
		}
		want := "MillraceNoWorkers{kind=commands,namespace=idle}"
		if len(active) != 1 || active[0] != want {
			return fmt.Errorf("pending or firing alerts %q, want only %s", active, want)
		}
		return nil
	})
}

// startDev starts a millrace dev (auth on) and returns its address and a
// client with its admin token.
func startDev(ctx context.Context, t *testing.T, name string, args ...string) (string, *client.Client) {
	t.Helper()
	dataDir := t.TempDir()
	addr := proctest.FreeAddr(t)
	dev := proctest.Start(t, name, syscall.SIGTERM, devEnv(), binary, append([]string{"dev", "--data-dir", dataDir, "--nats-port", "-1", "--addr", addr}, args...)...)
	wait.For(t, 60*time.Second, func() error {
		if err := dev.Exited(); err != nil {
			t.Fatal(err)
		}
		return httpOK(ctx, "http://"+addr+"/api/health")
	})
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatalf("%s's admin token: %v", name, err)
	}
	return addr, client.New("http://" + addr).WithToken(strings.TrimSpace(string(token)))
}

const okPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: monitoring-ok, path: monitoring/ok}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["echo hello"]}
    next: {arcs: [{step: compute}]}
  - step: compute
    tool: {kind: duckdb, query: "select 42 as answer"}
    next: {arcs: [{step: done}]}
  - step: done
    tool: {kind: noop, result: {ok: true}}
`

// generateLoad makes every series of the dashboard and the rules exist:
// flows with several tools and a failing step, a 404, SQL queries in both
// lanes, and metric queries that hit and miss a pre-aggregate.
func generateLoad(ctx context.Context, t *testing.T, c *client.Client) {
	t.Helper()
	ok, err := c.Register(ctx, okPlaybook)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	bad, err := c.Register(ctx, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: monitoring-fail, path: monitoring/fail}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["exit 3"]}
`)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	var ids []int64
	for i := range 12 {
		pb := ok
		if i%4 == 3 {
			pb = bad
		}
		st, err := c.Execute(ctx, pb.Path, pb.Version, nil)
		if err != nil {
			t.Fatalf("execute %s: %v", pb.Path, err)
		}
		ids = append(ids, st.ExecutionID)
	}
	// A 4xx for the error panel.
	if _, err := c.Execution(ctx, 1<<40); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("GET a missing execution: %v, want 404", err)
	}

	// A project on the test PostgreSQL; the model makes its own rows.
	if _, err := c.ProjectPut(ctx, "shop", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatalf("project: %v", err)
	}
	if _, err := c.ModelsPut(ctx, "shop", []byte(`models:
  - name: orders
    sql: >-
      select n as id, (array['web','ios','store'])[1 + n % 3] as channel, (n % 97) * 1.5 as amount,
      n % 50 as customer_id, timestamp '2025-01-01' + n * interval '37 minutes' as created_at
      from generate_series(1, 2000) as n
    dimensions:
      - {name: channel, type: string}
      - {name: created_at, type: timestamp}
    metrics:
      - {name: orders, type: count}
      - {name: revenue, type: sum, sql: amount}
      - {name: customers, type: count_distinct, sql: customer_id}
    pre_aggregates:
      - {name: daily, dimensions: [channel], metrics: [orders, revenue], time_dimension: created_at, granularity: day}
`)); err != nil {
		t.Fatalf("models: %v", err)
	}
	wait.For(t, 60*time.Second, func() error {
		infos, err := c.PreAggregates(ctx, "shop")
		if err != nil {
			return err
		}
		for _, in := range infos {
			if in.Active != nil {
				return nil
			}
		}
		return fmt.Errorf("no active build yet: %+v", infos)
	})
	var uuids []string
	for _, lane := range []string{"interactive", "background"} {
		s, err := c.QuerySubmit(ctx, "shop", "select 1 as one", lane, true)
		if err != nil {
			t.Fatalf("SQL query (%s): %v", lane, err)
		}
		uuids = append(uuids, s.QueryUUID)
	}
	for _, q := range []string{
		`{"query":{"exploreName":"orders","dimensions":["orders_created_at_month","orders_channel"],"metrics":["orders_revenue"]}}`, // hit
		`{"query":{"exploreName":"orders","dimensions":["orders_created_at_month"],"metrics":["orders_customers"]}}`,                // miss: not covered
		`{"usePreAggregates":false,"query":{"exploreName":"orders","dimensions":["orders_channel"],"metrics":["orders_orders"]}}`,   // miss: bypassed
	} {
		var in api.MetricQuerySubmit
		if err := json.Unmarshal([]byte(q), &in); err != nil {
			t.Fatal(err)
		}
		s, err := c.MetricQuerySubmit(ctx, "shop", in)
		if err != nil {
			t.Fatalf("metric query %s: %v", q, err)
		}
		uuids = append(uuids, s.QueryUUID)
	}

	for _, id := range ids {
		wait.For(t, 60*time.Second, func() error {
			ex, err := c.Execution(ctx, id)
			if err == nil && !ex.Status.Terminal() {
				err = fmt.Errorf("execution %d is %s", id, ex.Status)
			}
			return err
		})
	}
	for _, u := range uuids {
		wait.For(t, 60*time.Second, func() error {
			p, err := c.QueryGet(ctx, "shop", u, 1, 1)
			if err == nil && p.Status != api.QueryReady {
				err = fmt.Errorf("query %s is %s %s", u, p.Status, p.Error)
			}
			return err
		})
	}
}

func httpOK(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// promQuery runs an instant query and returns the labels of its series.
func promQuery(ctx context.Context, promURL, expr string) ([]map[string]string, error) {
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := promGet(ctx, promURL+"/api/v1/query?"+url.Values{"query": {expr}}.Encode(), &out); err != nil {
		return nil, err
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s", out.Error)
	}
	if out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", out.Data.ResultType)
	}
	series := make([]map[string]string, 0, len(out.Data.Result))
	for _, r := range out.Data.Result {
		series = append(series, r.Metric)
	}
	return series, nil
}

// waitSeries polls until expr returns at least one series, up to deadline.
func waitSeries(ctx context.Context, promURL, expr string, deadline time.Time) error {
	return wait.Poll(time.Until(deadline), func() error {
		series, err := promQuery(ctx, promURL, expr)
		if err == nil && len(series) == 0 {
			err = errors.New("no series")
		}
		return err
	})
}

// promAlerts lists the pending and firing alerts as
// name{label=value,...} (labels but severity, sorted), sorted.
func promAlerts(ctx context.Context, promURL string) ([]string, error) {
	var out struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := promGet(ctx, promURL+"/api/v1/alerts", &out); err != nil {
		return nil, err
	}
	var names []string
	for _, a := range out.Data.Alerts {
		var kv []string
		for k, v := range a.Labels {
			if k != "alertname" && k != "severity" {
				kv = append(kv, k+"="+v)
			}
		}
		slices.Sort(kv)
		names = append(names, a.Labels["alertname"]+"{"+strings.Join(kv, ",")+"}")
	}
	slices.Sort(names)
	return names, nil
}

// rulesHealthy checks that Prometheus evaluated every loaded rule, without
// error.
func rulesHealthy(ctx context.Context, promURL string, want int) error {
	var out struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name           string `json:"name"`
					Health         string `json:"health"`
					LastError      string `json:"lastError"`
					LastEvaluation string `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := promGet(ctx, promURL+"/api/v1/rules", &out); err != nil {
		return err
	}
	n := 0
	for _, g := range out.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n != want {
		return fmt.Errorf("prometheus loaded %d rules, the file has %d", n, want)
	}
	return nil
}

func promGet(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: %s: %v", u, resp.Status, err)
	}
	return nil
}
