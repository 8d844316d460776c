package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// metricsText reads the server's /metrics exposition.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", res.StatusCode, err)
	}
	return string(b)
}

// metricValue finds the sample `series value` (series with its labels in
// the exposition's sorted order) in text.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func opsReport(t *testing.T, base string) api.OpsReport {
	t.Helper()
	var r api.OpsReport
	if code := getJSON(t, base+"/api/ops", &r); code != 200 {
		t.Fatalf("GET /api/ops: %d", code)
	}
	return r
}

func hasProblem(r api.OpsReport, code string) bool {
	for _, p := range r.Problems {
		if p.Code == code {
			return true
		}
	}
	return false
}

// TestOpsGaugesAndReport builds a known state (two executions whose
// commands wait on the stream, one of them claimed long ago by a worker
// that died, a deferred outbox row) and reads it back through /api/ops and
// /metrics; then a presence beat brings a worker online.
func TestOpsGaugesAndReport(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, func(c *config.Server) {
		// The reaper (first pass after one interval) would re-notify the dead
		// worker's command and move the lag.
		c.ReapInterval, c.RedeliverAfter = 5*time.Minute, time.Hour
	})
	ctx := t.Context()
	base := h.Srv.URL()
	if _, err := h.API.Register(ctx, oneStep); err != nil {
		t.Fatal(err)
	}
	var execs []int64
	for range 2 {
		st, err := h.API.Execute(ctx, "t/one", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		execs = append(execs, st.ExecutionID)
	}
	st := h.Srv.Store()
	cmds, err := store.ReadValue(ctx, st, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(ctx, execs[0])
	})
	if err != nil || len(cmds) != 1 {
		t.Fatalf("commands of %d: %v %v", execs[0], cmds, err)
	}
	// Wait for the relay: both notifications on the stream, outbox empty.
	wait.For(t, 10*time.Second, func() error {
		if n := h.Consumer(t).NumPending; n != 2 {
			return fmt.Errorf("consumer pending %d, want 2", n)
		}
		return nil
	})
	claimedAt := time.Now().Add(-10 * time.Minute)
	err = st.Do(ctx, execs[0], func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.CommandClaim(ctx, store.ClaimParams{EventID: cmds[0].EventID, WorkerID: "dead", Now: claimedAt, LeaseTTL: time.Minute}); err != nil {
			return err
		}
		return tx.OutboxInsert(ctx, store.OutboxMsg{ID: h.Srv.IDs().Next(), EventID: cmds[0].EventID, Subject: h.Cfg.NATS.Subject,
			MsgID: "deferred", Payload: []byte(`{}`), CreatedAt: time.Now(), AvailableAt: time.Now().Add(time.Hour)})
	})
	if err != nil {
		t.Fatal(err)
	}

	var r api.OpsReport
	wait.For(t, 10*time.Second, func() error {
		r = opsReport(t, base)
		if r.Commands.ExpiredLeases != 1 || r.Outbox.Depth != 1 {
			return fmt.Errorf("report not there yet: %+v", r)
		}
		return nil
	})
	if r.Store != "ok" || r.DatabaseTime == nil || math.Abs(r.ClockSkewSeconds) > 1 {
		t.Errorf("store %q, database time %v, skew %v; want ok, set, about 0", r.Store, r.DatabaseTime, r.ClockSkewSeconds)
	}
	if r.Commands.Unclaimed != 1 || r.Commands.ExpiredLeaseOldestAgeSeconds < 8*60 || r.Outbox.OldestAgeSeconds != 0 {
		t.Errorf("commands %+v outbox %+v; want 1 unclaimed, a lease expired 9 minutes ago, a deferred row of age 0", r.Commands, r.Outbox)
	}
	if r.Executions["running"] != 2 || r.QueriesQueued["interactive"] != 0 || len(r.QueriesQueued) != 3 {
		t.Errorf("executions %v, queries queued %v", r.Executions, r.QueriesQueued)
	}
	if !r.NATS.Connected || len(r.NATS.Streams) != 1 || r.NATS.Streams[0].Name != h.Cfg.NATS.Stream || r.NATS.Streams[0].Kind != bus.KindCommands {
		t.Fatalf("nats = %+v", r.NATS)
	}
	var lag uint64
	for _, c := range r.NATS.Streams[0].Consumers {
		if c.Name == h.Cfg.NATS.Consumer {
			lag = c.Lag
		}
	}
	if lag != 2 {
		t.Errorf("consumers %+v: want %s with lag 2", r.NATS.Streams[0].Consumers, h.Cfg.NATS.Consumer)
	}
	if !hasProblem(r, api.ProblemNoWorkers) || !hasProblem(r, api.ProblemExpiredLeases) || hasProblem(r, api.ProblemNATSDisconnected) {
		t.Errorf("problems = %+v; want no_workers and expired_leases", r.Problems)
	}

	text := metricsText(t, base)
	labels := fmt.Sprintf(`{consumer=%q,kind="commands",pool="",stream=%q}`, h.Cfg.NATS.Consumer, h.Cfg.NATS.Stream)
	for series, want := range map[string]float64{
		"millrace_nats_connected":                                                  1,
		"millrace_outbox_depth":                                                    1,
		"millrace_outbox_oldest_age_seconds":                                       0,
		"millrace_commands_unclaimed":                                              1,
		"millrace_commands_expired_leases":                                         1,
		`millrace_executions{status="running"}`:                                    2,
		`millrace_queries_queued{lane="interactive"}`:                              0,
		`millrace_queries_queued{lane="pre-aggregate"}`:                            0,
		fmt.Sprintf(`millrace_nats_stream_messages{stream=%q}`, h.Cfg.NATS.Stream): 2,
		"millrace_nats_consumer_lag_messages" + labels:                             2,
		"millrace_nats_consumer_pending_messages" + labels:                         2,
		"millrace_nats_consumer_ack_pending_messages" + labels:                     0,
		"millrace_nats_consumer_redelivered_messages" + labels:                     0,
		`millrace_workers_online{kind="commands",pool=""}`:                         0,
		`millrace_worker_slots{kind="commands",pool=""}`:                           0,
		`millrace_worker_slots_busy{kind="commands",pool=""}`:                      0,
	} {
		if got, ok := metricValue(text, series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	for _, name := range []string{"millrace_commands_unclaimed_oldest_age_seconds", "millrace_clock_skew_seconds", "millrace_nats_consumer_waiting_pulls"} {
		if !strings.Contains(text, "# HELP "+name+" ") {
			t.Errorf("/metrics has no help for %s", name)
		}
	}

	// Two workers beat: one in the default pool, one in pool gpu.
	for _, b := range []bus.Presence{
		{WorkerID: "w1", Kind: bus.KindCommands, Slots: 10, Busy: 3, At: time.Now()},
		{WorkerID: "w2", Kind: bus.KindCommands, Pool: "gpu", Slots: 4, Busy: 4, At: time.Now()},
	} {
		data, _ := json.Marshal(b)
		if err := h.NC.Publish(bus.PresenceSubject(b.Kind), data); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, func() error {
		r = opsReport(t, base)
		if len(r.Workers) != 2 || r.Workers[0].Online != 1 || r.Workers[1].Online != 1 {
			return fmt.Errorf("workers = %+v", r.Workers)
		}
		return nil
	})
	if w := r.Workers[0]; w.Pool != "" || w.Slots != 10 || w.Busy != 3 {
		t.Errorf("default pool = %+v", w)
	}
	if hasProblem(r, api.ProblemNoWorkers) {
		t.Errorf("problems = %+v; a worker is online", r.Problems)
	}
	text = metricsText(t, base)
	for series, want := range map[string]float64{
		`millrace_workers_online{kind="commands",pool=""}`:       1,
		`millrace_worker_slots{kind="commands",pool=""}`:         10,
		`millrace_worker_slots_busy{kind="commands",pool=""}`:    3,
		`millrace_workers_online{kind="commands",pool="gpu"}`:    1,
		`millrace_worker_slots_busy{kind="commands",pool="gpu"}`: 4,
	} {
		if got, ok := metricValue(text, series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
}

// Each metric query's pre-aggregate decision is counted by result and
// miss reason. The counter is the process's (tests in parallel add to it),
// so the check is on growth.
func TestPreAggregateMatchCounter(t *testing.T) {
	t.Parallel()
	f := newMetricFixture(t, false)
	base := f.h.Srv.URL()
	series := func(reason string) string {
		return fmt.Sprintf(`millrace_pre_aggregate_queries_total{reason=%q,result="miss"}`, reason)
	}
	before := metricsText(t, base)
	q := semantic.MetricQuery{ExploreName: "orders", Dimensions: []string{"orders_paid"}, Metrics: []string{"orders_order_count"}}
	f.submit(t, q, nil)
	f.submit(t, q, func(s *api.MetricQuerySubmit) { no := false; s.UsePreAggregates = &no })
	after := metricsText(t, base)
	for _, reason := range []string{api.PreAggMissFieldNotCovered, api.PreAggMissBypassed} {
		was, _ := metricValue(before, series(reason))
		now, ok := metricValue(after, series(reason))
		if !ok || now < was+1 {
			t.Errorf("%s = %v (present %v), want at least %v", series(reason), now, ok, was+1)
		}
	}
	if !strings.Contains(after, "# HELP millrace_pre_aggregate_queries_total ") {
		t.Error("/metrics has no help for millrace_pre_aggregate_queries_total")
	}
}
