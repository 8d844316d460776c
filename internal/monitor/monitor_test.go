package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// value reads one gauge.
func value(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// count is how many series c exports.
func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

// clock is a settable time source for the monitor and its presence.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a monitor over stub stats and, optionally, an embedded NATS.
type fixture struct {
	m     *Monitor
	clk   *clock
	conn  *bus.Conn
	stats atomic.Pointer[store.OpsStats]
	calls atomic.Int64
	// failing makes the stub store fail its reads.
	failing atomic.Bool
	// dbAhead is how far the stub database's clock is ahead of clk.
	dbAhead atomic.Int64
	// statsTake is how long (on clk) a stats read takes.
	statsTake atomic.Int64
}

func newFixture(t *testing.T, withNATS bool, cfg Config) *fixture {
	t.Helper()
	f := &fixture{clk: &clock{t: time.Now().UTC()}}
	st := store.NewOpsStats()
	f.stats.Store(&st)
	if withNATS {
		emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Shutdown)
		bc := bus.DefaultConfig()
		bc.URL = emb.URL()
		if f.conn, err = bus.Connect(t.Context(), bc, quiet); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.conn.Close)
	}
	src := Sources{
		Stats: func(ctx context.Context, now time.Time) (store.OpsStats, error) {
			f.calls.Add(1)
			if f.failing.Load() {
				return store.OpsStats{}, errors.New("database is down")
			}
			f.clk.add(time.Duration(f.statsTake.Load()))
			return *f.stats.Load(), nil
		},
		Clock: func(context.Context) (time.Time, error) {
			return f.clk.now().Add(time.Duration(f.dbAhead.Load())), nil
		},
		NATS: func() *bus.Conn { return f.conn },
	}
	f.m = New(cfg, src, quiet)
	f.m.now = f.clk.now
	f.m.presence.now = f.clk.now
	t.Cleanup(f.m.presence.close)
	return f
}

func (f *fixture) sample(t *testing.T, periodic bool) api.OpsReport {
	t.Helper()
	if err := f.m.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() { <-f.m.sem }()
	return f.m.sample(t.Context(), periodic)
}

func codes(r api.OpsReport) string {
	var cs []string
	for _, p := range r.Problems {
		cs = append(cs, p.Severity+":"+p.Code)
	}
	return strings.Join(cs, ",")
}

// Thresholds: each store figure becomes a problem only past its limit.
func TestProblemsFromStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, Config{ReapInterval: 5 * time.Second, RedeliverAfter: 30 * time.Second})
	now := f.clk.now()
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }

	st := store.NewOpsStats()
	st.OutboxDepth, st.OutboxOldest = 3, ago(59*time.Second)
	st.CommandsUnclaimed, st.UnclaimedOldest = 2, ago(59*time.Second)
	st.ExpiredLeases, st.ExpiredOldest = 1, ago(4*time.Second)
	f.dbAhead.Store(int64(-900 * time.Millisecond))
	f.stats.Store(&st)
	r := f.sample(t, true)
	if got := codes(r); got != "error:nats_disconnected" {
		t.Fatalf("under every limit: problems %s, want only nats_disconnected (no NATS here)", got)
	}
	if r.Outbox.Depth != 3 || r.Outbox.OldestAgeSeconds != 59 || r.Commands.UnclaimedOldestAgeSeconds != 59 || r.ClockSkewSeconds < 0.89 || r.ClockSkewSeconds > 0.91 {
		t.Fatalf("report = %+v", r)
	}

	st.OutboxOldest, st.UnclaimedOldest, st.ExpiredOldest = ago(61*time.Second), ago(61*time.Second), ago(6*time.Second)
	f.dbAhead.Store(int64(1500 * time.Millisecond))
	f.stats.Store(&st)
	r = f.sample(t, true)
	want := "error:outbox_stuck,error:commands_unclaimed,warning:expired_leases,warning:clock_skew,error:nats_disconnected"
	if got := codes(r); got != want {
		t.Fatalf("over every limit: problems %s, want %s", got, want)
	}
	for _, p := range r.Problems {
		if p.Message == "" || p.Hint == "" {
			t.Errorf("problem %+v has no message or hint", p)
		}
	}
	g := f.m.g
	if v := value(t, g.outboxAge); v != 61 {
		t.Errorf("millrace_outbox_oldest_age_seconds = %v, want 61", v)
	}
	if v := value(t, g.expiredAge); v != 6 {
		t.Errorf("millrace_commands_expired_lease_oldest_age_seconds = %v, want 6", v)
	}
	if v := value(t, g.clockSkew); v > -1.49 || v < -1.51 {
		t.Errorf("millrace_clock_skew_seconds = %v, want -1.5", v)
	}
	if v := value(t, g.natsConnected); v != 0 {
		t.Errorf("millrace_nats_connected = %v, want 0", v)
	}
}

// The skew comes from a round trip of its own: a stats read that takes
// long (a slow statement of several subqueries) does not count as skew.
func TestClockSkewIgnoresStatsRunTime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, Config{})
	f.statsTake.Store(int64(3 * time.Second))
	f.dbAhead.Store(int64(200 * time.Millisecond))
	r := f.sample(t, true)
	if r.ClockSkewSeconds > -0.19 || r.ClockSkewSeconds < -0.21 {
		t.Fatalf("clock skew after a 3 s stats read with the database 0.2 s ahead = %v s, want -0.2", r.ClockSkewSeconds)
	}
	if strings.Contains(codes(r), "clock_skew") {
		t.Fatalf("problems %s: a slow stats read made a clock skew", codes(r))
	}
}

// A sample that cannot read the store keeps the store gauges (there is
// nothing newer) but says so: store_up drops to 0 and the timestamp of
// the last good sample stays, so an alert and the dashboard see the
// gauges are stale.
func TestStoreUnreadableIsExported(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, Config{})
	st := store.NewOpsStats()
	st.OutboxDepth = 4
	f.stats.Store(&st)
	good := f.sample(t, true)
	g := f.m.g
	if v := value(t, g.storeUp); v != 1 {
		t.Fatalf("millrace_monitor_store_up after a good sample = %v, want 1", v)
	}
	want := float64(good.At.UnixNano()) / 1e9
	if v := value(t, g.lastSample); v != want {
		t.Fatalf("millrace_monitor_last_sample_timestamp_seconds = %v, want %v (the sample's time)", v, want)
	}

	f.failing.Store(true)
	f.clk.add(time.Minute)
	if r := f.sample(t, true); !strings.Contains(codes(r), "error:store") {
		t.Fatalf("problems %s, want the store problem", codes(r))
	}
	if v := value(t, g.storeUp); v != 0 {
		t.Errorf("millrace_monitor_store_up after a failed read = %v, want 0", v)
	}
	if v := value(t, g.lastSample); v != want {
		t.Errorf("millrace_monitor_last_sample_timestamp_seconds after a failed read = %v, want the last good sample's %v", v, want)
	}
	if v := value(t, g.outboxDepth); v != 4 {
		t.Errorf("millrace_outbox_depth = %v, want the last good value 4", v)
	}

	f.failing.Store(false)
	f.sample(t, true)
	if v := value(t, g.storeUp); v != 1 {
		t.Errorf("millrace_monitor_store_up once the store answers again = %v, want 1", v)
	}
}

// Report samples at most once per MinAge; a sample that cannot finish
// within Timeout ends with the store problem instead of holding callers.
func TestReportReusesAndBounds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, Config{})
	for range 3 {
		if _, err := f.m.Report(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("three reports within MinAge read the store %d times, want 1", n)
	}
	f.clk.add(MinAge)
	if _, err := f.m.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("a report after MinAge read the store %d times in all, want 2", n)
	}

	slow := New(Config{Timeout: 100 * time.Millisecond}, Sources{
		Stats: func(ctx context.Context, _ time.Time) (store.OpsStats, error) {
			<-ctx.Done()
			return store.OpsStats{}, ctx.Err()
		},
		NATS: func() *bus.Conn { return nil },
	}, quiet)
	began := time.Now()
	r, err := slow.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 5*time.Second || r.Store == "ok" || !strings.Contains(codes(r), "error:store") {
		t.Fatalf("a stalled store: report after %s with store %q and problems %s; want at once, an error and the store problem", d, r.Store, codes(r))
	}
	// A caller whose context ends while another holds the sample gives up.
	if err := slow.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := slow.Report(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("report while a sample runs and ctx ends: %v, want DeadlineExceeded", err)
	}
	<-slow.sem
}

// Presence through NATS: beats count per (kind, pool); a worker silent for
// three beats is gone, its pool stays at 0; every kind in use has its
// default pool even with nobody in it.
func TestPresence(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true, Config{Streams: []Stream{{Name: "NOPE_A", Kind: bus.KindCommands}, {Name: "NOPE_B", Kind: bus.KindWarehouse}}})
	f.sample(t, false) // subscribes
	beat := func(p bus.Presence) {
		t.Helper()
		if err := f.conn.PublishPresence(p); err != nil {
			t.Fatal(err)
		}
	}
	beat(bus.Presence{WorkerID: "a", Kind: bus.KindCommands, Slots: 100, Busy: 7})
	beat(bus.Presence{WorkerID: "b", Kind: bus.KindCommands, Slots: 50, Busy: 1})
	beat(bus.Presence{WorkerID: "g", Kind: bus.KindCommands, Pool: "gpu", Slots: 2, Busy: 2})
	_ = f.conn.NC.Publish(bus.PresenceSubject(bus.KindCommands), []byte("not a beat"))
	var r api.OpsReport
	wait.For(t, 5*time.Second, func() error {
		r = f.sample(t, false)
		if b, _ := json.Marshal(r.Workers); string(b) != `[{"kind":"commands","pool":"","online":2,"slots":150,"busy":8},`+
			`{"kind":"commands","pool":"gpu","online":1,"slots":2,"busy":2},{"kind":"warehouse","pool":"","online":0,"slots":0,"busy":0}]` {
			return fmt.Errorf("workers = %s", b)
		}
		return nil
	})
	if v := value(t, f.m.g.workerSlotsBusy.WithLabelValues(bus.KindCommands, "")); v != 8 {
		t.Fatalf("millrace_worker_slots_busy{commands,\"\"} = %v, want 8", v)
	}
	// b and g fall silent past three beats; a beats again.
	f.clk.add(presenceTTL + time.Second)
	beat(bus.Presence{WorkerID: "a", Kind: bus.KindCommands, Slots: 100, Busy: 0})
	wait.For(t, 5*time.Second, func() error {
		r = f.sample(t, false)
		if b, _ := json.Marshal(r.Workers); string(b) != `[{"kind":"commands","pool":"","online":1,"slots":100,"busy":0},`+
			`{"kind":"commands","pool":"gpu","online":0,"slots":0,"busy":0},{"kind":"warehouse","pool":"","online":0,"slots":0,"busy":0}]` {
			return fmt.Errorf("workers = %s", b)
		}
		return nil
	})
	if v := value(t, f.m.g.workersOnline.WithLabelValues(bus.KindCommands, "gpu")); v != 0 {
		t.Fatalf("millrace_workers_online{commands,gpu} = %v, want 0", v)
	}
}

// Streams: gauges per consumer, a vanished consumer's series deleted, lag
// growing over three periodic samples flagged, work with no worker
// flagged, a replica count unlike NATS_REPLICAS flagged, a missing stream
// reported without failing the sample.
func TestStreams(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true, Config{Replicas: 1, Streams: []Stream{{Name: "JOBS", Kind: bus.KindWarehouse}, {Name: "MISSING", Kind: bus.KindPreAggregate}}})
	ctx := t.Context()
	s, err := f.conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"keep", "drop"} {
		if _, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: d, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	publish := func() {
		t.Helper()
		if _, err := f.conn.JS.Publish(ctx, "jobs.x", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	r := f.sample(t, true)
	if len(r.NATS.Streams) != 2 || r.NATS.Streams[1].Error == "" || !r.NATS.Connected {
		t.Fatalf("streams = %+v", r.NATS.Streams)
	}
	if got := codes(r); got != "error:no_workers" {
		t.Fatalf("one message, no worker: problems %s, want no_workers", got)
	}
	if v := value(t, f.m.g.lag.WithLabelValues("JOBS", "keep", bus.KindWarehouse, "")); v != 1 {
		t.Fatalf("lag of keep = %v, want 1", v)
	}
	if err := s.DeleteConsumer(ctx, "drop"); err != nil {
		t.Fatal(err)
	}
	publish()
	f.sample(t, true)
	publish()
	r = f.sample(t, true) // lags 1, 2, 3 over three periodic samples
	if !strings.Contains(codes(r), "warning:consumer_lag") {
		t.Fatalf("lag growing over three samples: problems %s, want consumer_lag", codes(r))
	}
	if n := count(f.m.g.lag); n != 1 {
		t.Fatalf("%d lag series after the consumer drop went away, want 1", n)
	}
	if v := value(t, f.m.g.streamMessages.WithLabelValues("JOBS")); v != 3 {
		t.Fatalf("millrace_nats_stream_messages{JOBS} = %v, want 3", v)
	}
	// An on-demand sample neither extends nor restarts the trend.
	publish()
	if r = f.sample(t, false); !strings.Contains(codes(r), "warning:consumer_lag") {
		t.Fatalf("problems %s, want consumer_lag still", codes(r))
	}

	h := newFixture(t, true, Config{Replicas: 3, Streams: []Stream{{Name: "R1", Kind: bus.KindCommands}}})
	if _, err := h.conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "R1", Subjects: []string{"r1"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if r = h.sample(t, true); codes(r) != "warning:stream_replicas" || !strings.Contains(r.Problems[0].Message, "stream R1 has 1 replicas; NATS_REPLICAS is 3") {
		t.Fatalf("an R1 stream with NATS_REPLICAS=3: problems %+v", r.Problems)
	}
}

// Workers are judged per (kind, pool): a routed pool's durable with work
// and no worker of that pool is a problem even while default-pool workers
// run, and its gauges carry the kind and pool the alert joins on.
func TestNoWorkersPerPool(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true, Config{Replicas: 1, Streams: []Stream{{Name: "CMDS", Kind: bus.KindCommands, Consumer: "wp"}}})
	ctx := t.Context()
	s, err := f.conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "CMDS", Subjects: []string{"cmd", "cmd.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	for _, pool := range []string{"", "gpu"} {
		if _, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: bus.PoolConsumer("wp", pool),
			FilterSubject: bus.PoolSubject("cmd", pool), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{"cmd", "cmd.gpu", "cmd.gpu"} {
		if _, err := f.conn.JS.Publish(ctx, subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	f.sample(t, false) // subscribes to presence
	beat := func(pool string) {
		t.Helper()
		if err := f.conn.PublishPresence(bus.Presence{WorkerID: "w-" + pool, Kind: bus.KindCommands, Pool: pool, Slots: 1}); err != nil {
			t.Fatal(err)
		}
	}
	beat("")
	var r api.OpsReport
	wait.For(t, 5*time.Second, func() error {
		r = f.sample(t, false)
		if len(r.Workers) == 0 || r.Workers[0].Online != 1 {
			return fmt.Errorf("workers = %+v, want the default pool's worker online", r.Workers)
		}
		return nil
	})
	if got := codes(r); got != "error:no_workers" || !strings.Contains(r.Problems[0].Message, "2 messages wait on CMDS and no commands worker of pool gpu is online") ||
		!strings.Contains(r.Problems[0].Hint, "MILLRACE_WORKER_POOL=gpu") {
		t.Fatalf("gpu work, only a default worker: problems %+v, want one no_workers for pool gpu", r.Problems)
	}
	if v := value(t, f.m.g.lag.WithLabelValues("CMDS", "wp_gpu", bus.KindCommands, "gpu")); v != 2 {
		t.Fatalf("millrace_nats_consumer_lag_messages{CMDS,wp_gpu,commands,gpu} = %v, want 2", v)
	}
	if v := value(t, f.m.g.pending.WithLabelValues("CMDS", "wp", bus.KindCommands, "")); v != 1 {
		t.Fatalf("millrace_nats_consumer_pending_messages{CMDS,wp,commands,\"\"} = %v, want 1", v)
	}
	if n := count(f.m.g.lag); n != 2 {
		t.Fatalf("%d lag series, want 2 (one per durable)", n)
	}

	beat("gpu")
	wait.For(t, 5*time.Second, func() error {
		if r = f.sample(t, false); codes(r) != "" {
			return fmt.Errorf("a worker in each pool: problems %s, want none", codes(r))
		}
		return nil
	})
}

func TestStreamPool(t *testing.T) {
	t.Parallel()
	cmds := Stream{Name: "C", Kind: bus.KindCommands, Consumer: "noetl_worker_pool"}
	lanes := Stream{Name: "Q", Kind: bus.KindWarehouse}
	for _, c := range []struct {
		s          Stream
		name, want string
	}{
		{cmds, "noetl_worker_pool", ""},
		{cmds, "noetl_worker_pool_gpu", "gpu"},
		{cmds, "noetl_worker_pool_big-mem", "big-mem"},
		{cmds, "someone_else", ""},
		{lanes, "warehouse_interactive", ""},
	} {
		if got := c.s.pool(c.name); got != c.want {
			t.Errorf("%s.pool(%q) = %q, want %q", c.s.Name, c.name, got, c.want)
		}
	}
}
