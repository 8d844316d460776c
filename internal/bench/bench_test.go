package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/worker/commands"
)

// testTimeout bounds one benchmark run in these tests: they check
// correctness on a shared, possibly slow machine (-race), never speed.
const testTimeout = 2 * time.Minute

type bundle struct {
	t   *testing.T
	ctx context.Context
}

func setup(t *testing.T) *bundle {
	t.Helper()
	t.Parallel()
	return &bundle{t: t, ctx: t.Context()}
}

// opts is a small self-contained run on a fresh SQLite file.
func (b *bundle) opts(executions, steps int) Options {
	return Options{
		Store:             "sqlite:" + filepath.Join(b.t.TempDir(), "bench.db"),
		Executions:        executions,
		Concurrency:       16,
		Steps:             steps,
		Workers:           DefaultWorkers,
		WorkerConcurrency: DefaultWorkerConcurrency,
		Timeout:           testTimeout,
	}
}

func (b *bundle) run(o Options) *Result {
	b.t.Helper()
	res, err := Run(b.ctx, o)
	if err != nil {
		b.t.Fatalf("Run: %v", err)
	}
	return res
}

// checkSane asserts a run that lost nothing and produced ordered, positive
// latencies.
func checkSane(t *testing.T, res *Result, executions int) {
	t.Helper()
	if res.Submitted != executions || res.Completed != executions || res.Incomplete != 0 || res.Failed != 0 {
		t.Fatalf("submitted %d, completed %d, incomplete %d, failed %d; want %d, %d, 0, 0",
			res.Submitted, res.Completed, res.Incomplete, res.Failed, executions, executions)
	}
	for name, l := range map[string]Latency{"submit_to_start": res.SubmitToStart, "submit_to_complete": res.SubmitToComplete} {
		if l.Samples != executions {
			t.Errorf("%s has %d samples, want %d", name, l.Samples, executions)
		}
		if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s = %+v, want 0 < p50 <= p90 <= p99 <= max", name, l)
		}
	}
	if res.SubmitToStart.P50 > res.SubmitToComplete.P50 {
		t.Errorf("median start %.3fms after median completion %.3fms", res.SubmitToStart.P50, res.SubmitToComplete.P50)
	}
	if res.ExecutionsPerSecond <= 0 || res.Seconds <= 0 || res.StepsPerSecond != res.ExecutionsPerSecond*float64(res.Steps) {
		t.Errorf("throughput %.1f/s over %.3fs, %.1f steps/s: want positive, steps = executions x %d",
			res.ExecutionsPerSecond, res.Seconds, res.StepsPerSecond, res.Steps)
	}
	if res.Redeliveries == nil {
		t.Error("redeliveries unknown; the consumer should have been readable")
	}
	if runtime.GOOS != "windows" && res.CPUMillisPerExecution <= 0 {
		t.Errorf("cpu per execution %.3f ms, want it measured", res.CPUMillisPerExecution)
	}
}

// The CI smoke run on SQLite: correctness, never speed.
func TestFlowsSQLite(t *testing.T) {
	b := setup(t)
	o := b.opts(200, 2)
	var progress bytes.Buffer
	o.Progress = &progress
	res := b.run(o)
	checkSane(t, res, 200)
	if res.Target != "sqlite" || res.Workers != DefaultWorkers {
		t.Errorf("target %q with %d workers, want sqlite with %d", res.Target, res.Workers, DefaultWorkers)
	}
	if !strings.Contains(progress.String(), "submitted 200/200") {
		t.Errorf("progress = %q, want a final line with submitted 200/200", progress.String())
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"submit -> command start", "submit -> complete", "executions/s", "not completed  0"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// The CI smoke run on PostgreSQL: a fresh schema, dropped afterwards.
func TestFlowsPostgres(t *testing.T) {
	b := setup(t)
	o := b.opts(200, 2)
	o.Store = pgtest.URL()
	res := b.run(o)
	checkSane(t, res, 200)
	if res.Target != "postgres" || !strings.HasPrefix(res.Schema, "bench_") {
		t.Fatalf("target %q schema %q, want postgres in a bench_ schema", res.Target, res.Schema)
	}
	if n := b.schemaExecutions(res.Schema); n != -1 {
		t.Errorf("schema %s still exists with %d executions; it should have been dropped", res.Schema, n)
	}
}

func TestFlowsPostgresKeep(t *testing.T) {
	b := setup(t)
	o := b.opts(10, 1)
	o.Store, o.Keep = pgtest.URL(), true
	res := b.run(o)
	t.Cleanup(func() { b.exec("DROP SCHEMA IF EXISTS " + pgx.Identifier{res.Schema}.Sanitize() + " CASCADE") })
	checkSane(t, res, 10)
	if n := b.schemaExecutions(res.Schema); n != 10 {
		t.Fatalf("kept schema %s holds %d executions, want 10", res.Schema, n)
	}
}

// schemaExecutions counts the executions in schema, or -1 when it is gone.
func (b *bundle) schemaExecutions(schema string) int {
	b.t.Helper()
	conn, err := pgx.Connect(b.ctx, pgtest.URL())
	if err != nil {
		b.t.Fatal(err)
	}
	defer conn.Close(b.ctx)
	var exists bool
	if err := conn.QueryRow(b.ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		b.t.Fatal(err)
	}
	if !exists {
		return -1
	}
	var n int
	if err := conn.QueryRow(b.ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "executions"}.Sanitize()).Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// exec runs sql on its own connection; it runs in cleanups, after
// t.Context() has ended, so it uses a context of its own.
func (b *bundle) exec(sql string) {
	conn, err := pgx.Connect(context.Background(), pgtest.URL())
	if err != nil {
		b.t.Error(err)
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		b.t.Error(err)
	}
}

// startServer runs a server with workers (workers == 0: none) and returns
// options that measure it through --server.
func (b *bundle) startServer(workers int) (Options, *client.Client) {
	b.t.Helper()
	h := servertest.Start(b.t, nil)
	for i := range workers {
		var c config.Worker
		config.WorkerSet(&c)
		c.NATS, c.ServerURL, c.WorkerID = h.Cfg.NATS, h.Srv.URL(), "w"+string(rune('a'+i))
		w, err := commands.New(b.ctx, c, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(ctx) }()
		b.t.Cleanup(func() { cancel(); <-done })
	}
	return Options{Server: h.Srv.URL(), NATS: h.Cfg.NATS, Executions: 50, Concurrency: 8, Steps: 1, Timeout: testTimeout}, h.API
}

func TestFlowsAgainstServer(t *testing.T) {
	b := setup(t)
	o, srv := b.startServer(1)
	o.Steps = 3
	res := b.run(o)
	checkSane(t, res, 50)
	if res.Target != o.Server || res.Workers != 0 {
		t.Errorf("target %q with %d workers, want %q with none of ours", res.Target, res.Workers, o.Server)
	}
	// Every execution ran the generated chain: three noop steps in order.
	page, err := srv.Executions(b.ctx, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Executions) != 50 {
		t.Fatalf("server holds %d executions, want 50", len(page.Executions))
	}
	for _, e := range page.Executions[:3] {
		evs, err := srv.Events(b.ctx, e.ExecutionID)
		if err != nil {
			t.Fatal(err)
		}
		var steps []string
		for _, ev := range evs {
			if ev.EventType == api.EvCommandCompleted {
				steps = append(steps, ev.Step)
			}
		}
		if e.Path != "bench/chain-3" || strings.Join(steps, ",") != "start,step2,step3" {
			t.Errorf("execution %d of %s completed steps %v, want bench/chain-3 with start, step2, step3", e.ExecutionID, e.Path, steps)
		}
	}
}

// With nobody to run them, executions never complete: the run reports them
// and fails, with the result intact.
func TestFlowsIncompleteFails(t *testing.T) {
	b := setup(t)
	o, _ := b.startServer(0)
	o.Executions, o.Timeout = 5, time.Second
	res, err := Run(b.ctx, o)
	var inc *IncompleteError
	if !errors.As(err, &inc) || inc.Incomplete != 5 || !inc.TimedOut {
		t.Fatalf("err = %v, want an IncompleteError for 5 executions after a timeout", err)
	}
	if res == nil || res.Submitted != 5 || res.Completed != 0 || res.Incomplete != 5 || !res.TimedOut {
		t.Fatalf("result = %+v, want 5 submitted, none completed, timed out", res)
	}
}

// A fixed arrival rate spaces submissions: 30 at 100/s span about 290 ms.
func TestFlowsRatePaces(t *testing.T) {
	b := setup(t)
	o := b.opts(30, 1)
	o.Rate = 100
	res := b.run(o)
	checkSane(t, res, 30)
	if res.SubmitRate <= 0 || res.SubmitRate > 100*1.05 {
		t.Fatalf("achieved submit rate %.1f/s, want at most the requested 100/s", res.SubmitRate)
	}
}

func TestOptionsRejected(t *testing.T) {
	t.Parallel()
	good := Options{Store: "sqlite::memory:", Executions: 1, Concurrency: 1, Steps: 1, Workers: 1, WorkerConcurrency: 1, Timeout: time.Second}
	for _, tc := range []struct {
		name, want string
		mod        func(*Options)
	}{
		{"no target", "--server URL", func(o *Options) { o.Store = "" }},
		{"both targets", "exclude each other", func(o *Options) { o.Server = "http://127.0.0.1:1" }},
		{"no executions", "--executions", func(o *Options) { o.Executions = 0 }},
		{"no submitters", "--concurrency", func(o *Options) { o.Concurrency = 0 }},
		{"negative rate", "--rate", func(o *Options) { o.Rate = -1 }},
		{"no steps", "--steps", func(o *Options) { o.Steps = 0 }},
		{"no workers", "--workers", func(o *Options) { o.Workers = 0 }},
		{"no timeout", "--timeout", func(o *Options) { o.Timeout = 0 }},
		{"unknown ack point", "--worker-ack", func(o *Options) { o.WorkerAck = "report" }},
		{"unknown store", "sqlite:PATH", func(o *Options) { o.Store = "mysql://x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := good
			tc.mod(&o)
			_, err := Run(t.Context(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestDistribution(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := distribution(ds)
	want := Latency{Samples: 100, P50: 50, P90: 90, P99: 99, Max: 100}
	if got != want {
		t.Fatalf("distribution = %+v, want %+v", got, want)
	}
	if got := distribution(nil); got != (Latency{}) {
		t.Fatalf("empty distribution = %+v", got)
	}
	if got := distribution([]time.Duration{3 * time.Millisecond}); got.P50 != 3 || got.P99 != 3 || got.Max != 3 {
		t.Fatalf("single sample = %+v", got)
	}
}
