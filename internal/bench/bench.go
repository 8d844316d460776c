// Package bench is the load generator behind `millrace bench flows`. It
// registers a generated chain of noop steps, submits executions through the
// HTTP API from concurrent submitters (as fast as possible or at a fixed
// arrival rate) and measures how they went: end-to-end throughput, the
// latency from submit to the first command.started and to completion, NATS
// redeliveries, and how many executions did not complete.
//
// It runs against a running server (Options.Server) or self-contained
// (Options.Store): embedded NATS, a server on a loopback port (or several on
// one database, Options.Servers) and in-process workers, wired exactly as
// `millrace dev` wires them. Self-contained runs can also drain a backlog
// submitted with no worker running (Options.Drain), start on a store that
// already holds a history of finished executions (Options.Prefill,
// prefill.go), and report the event store's bytes per execution and, on
// PostgreSQL with pg_stat_statements, the statements per execution (db.go).
//
// How it measures, so that measuring does not become the load:
//   - The submit time is taken by the client just before POST /api/execute.
//   - Completion is found by paging through GET /api/executions (newest
//     first, stopping at the oldest execution still pending) after the last
//     submit, not by polling each execution. Submit -> complete uses the
//     execution's ended_at, so the poll interval does not blur it.
//   - Submit -> command start needs each execution's events. They are
//     fetched after the run, for an evenly spaced sample of at most
//     Options.Sample completed executions (default DefaultSample).
//   - Server timestamps are compared with the client's clock: against a
//     server on another machine, clock skew shifts both latencies.
//   - Redeliveries are read from the worker pool's consumer: deliveries
//     minus distinct messages delivered during the run. Against a shared
//     server they include other traffic on that consumer.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
)

// Defaults of Options (and of the command's flags).
const (
	DefaultExecutions        = 1000
	DefaultConcurrency       = 64
	DefaultSteps             = 1
	DefaultWorkers           = 2
	DefaultWorkerConcurrency = config.DefaultConcurrency
	DefaultTimeout           = 5 * time.Minute
	// DefaultSample caps how many executions' events are fetched for the
	// submit -> command start distribution.
	DefaultSample = 2000
)

const (
	// pageSize is the page of GET /api/executions the completion poll
	// reads (the server's maximum).
	pageSize = 1000
	// pollInterval spaces completion passes; ended_at gives the precise
	// completion time, so this only bounds how late the run notices. A
	// pass lists every execution newer than the oldest pending one: at
	// 100ms those passes took about 12% of a self-contained run's CPU
	// (profiled), stolen from the system being measured.
	pollInterval = time.Second
	// sampleFetchers is how many event lists are fetched at once.
	sampleFetchers = 16
	// afterTimeout bounds the work done once the run is over (event
	// sampling, the final consumer reading), even when the run timed out.
	afterTimeout = time.Minute
	// natsInspectTimeout bounds connecting to NATS to read the consumer.
	natsInspectTimeout = 5 * time.Second
)

// Options configure a run. Exactly one of Server and Store is set.
type Options struct {
	// Server is the URL of a running server, and Token the API token sent
	// to it (role operator or admin: it registers and executes).
	Server string
	Token  string
	// Store makes the run self-contained: postgres://… (in a fresh schema
	// bench_<random>, dropped afterwards unless Keep) or sqlite:PATH.
	Store string
	Keep  bool
	// Auth is the self-contained server's MILLRACE_AUTH: tokens (the
	// default, as in production) or none, to measure what auth costs.
	Auth string

	Executions  int
	Concurrency int     // submitters
	Rate        float64 // executions/s; 0 submits as fast as possible
	Steps       int     // steps in the chain

	// Workers and WorkerConcurrency size the in-process pool
	// (self-contained only).
	Workers           int
	WorkerConcurrency int
	// WorkerAck is the in-process workers' MILLRACE_WORKER_ACK (claim or
	// completion; "" is the default).
	WorkerAck string

	// Servers is how many API servers a self-contained run starts on its
	// one database (1 when 0; more than one needs PostgreSQL), each with
	// its own relay and reapers. Submitters take turns over them, and so
	// do the workers.
	Servers int
	// Drain submits every execution with no worker running, then starts
	// the workers and measures how fast they empty the backlog
	// (self-contained only).
	Drain bool
	// Prefill stores this many finished executions before the measured
	// run (self-contained only): one real execution, then copies of its
	// rows made by the database (prefill.go).
	Prefill int

	Timeout time.Duration
	Sample  int // executions whose events are fetched; DefaultSample when 0

	// NATS names the stream and consumer. Against a running server it is
	// also where redeliveries are read (its URL and credentials);
	// self-contained, the embedded server's URL replaces NATS.URL. A zero
	// value means the defaults.
	NATS config.NATS

	// Progress receives live progress (nil: none). With ProgressTTY it is
	// redrawn in place; otherwise it is written as plain lines.
	Progress    io.Writer
	ProgressTTY bool
	// Log receives the self-contained stack's log (nil: discarded).
	Log *slog.Logger
}

func (o *Options) check() error {
	switch {
	case o.Server == "" && o.Store == "":
		return errors.New("nothing to benchmark: give --server URL (a running server) or --store postgres://…|sqlite:PATH (self-contained)")
	case o.Server != "" && o.Store != "":
		return errors.New("--server and --store exclude each other: --store starts its own server")
	case o.Executions < 1:
		return fmt.Errorf("--executions must be at least 1, got %d", o.Executions)
	case o.Concurrency < 1:
		return fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency)
	case o.Rate < 0 || math.IsInf(o.Rate, 0) || math.IsNaN(o.Rate):
		return fmt.Errorf("--rate must be 0 (as fast as possible) or a positive number, got %v", o.Rate)
	case o.Steps < 1:
		return fmt.Errorf("--steps must be at least 1, got %d", o.Steps)
	case o.Timeout <= 0:
		return fmt.Errorf("--timeout must be positive, got %s", o.Timeout)
	}
	if o.Server != "" && (o.Drain || o.Prefill > 0 || o.Servers > 1) {
		return errors.New("--drain, --prefill and --servers need a self-contained run (--store): they start and stop workers, write to the database or start servers")
	}
	if o.Drain && o.Prefill > 0 {
		return errors.New("--drain and --prefill exclude each other: a drain's backlog is its own pending executions")
	}
	if o.Prefill < 0 {
		return fmt.Errorf("--prefill must be 0 or more, got %d", o.Prefill)
	}
	if o.Servers == 0 {
		o.Servers = 1
	}
	if o.Servers < 1 || o.Servers > 1 && !isPostgres(o.Store) {
		return fmt.Errorf("--servers %d: use 1, or more with a postgres:// --store (SQLite has one writer: one server per file)", o.Servers)
	}
	if o.Store != "" {
		if o.Workers < 1 {
			return fmt.Errorf("--workers must be at least 1, got %d", o.Workers)
		}
		if o.WorkerConcurrency < 1 {
			return fmt.Errorf("--worker-concurrency must be at least 1, got %d", o.WorkerConcurrency)
		}
		if o.WorkerAck != "" {
			if err := config.CheckWorkerAck(o.WorkerAck); err != nil {
				return fmt.Errorf("--worker-ack: %w", err)
			}
		}
	}
	if o.Sample <= 0 {
		o.Sample = DefaultSample
	}
	if o.NATS.Stream == "" {
		var def config.NATS
		config.BindNATS(&config.Set{}, &def)
		def.URL = cmpOr(o.NATS.URL, def.URL)
		o.NATS = def
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

func isPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Latency is a distribution in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

// Result is what a run measured.
type Result struct {
	Target            string  `json:"target"` // server URL, or the store kind when self-contained
	Schema            string  `json:"schema,omitempty"`
	Executions        int     `json:"executions"`
	Steps             int     `json:"steps"`
	Concurrency       int     `json:"concurrency"`
	Rate              float64 `json:"rate"`
	Workers           int     `json:"workers,omitempty"`
	WorkerConcurrency int     `json:"worker_concurrency,omitempty"`
	WorkerAck         string  `json:"worker_ack,omitempty"`
	Servers           int     `json:"servers,omitempty"`

	// Prefilled is how many finished executions were stored before the
	// run (--prefill), and PrefillSeconds how long storing them took.
	Prefilled      int     `json:"prefilled,omitempty"`
	PrefillSeconds float64 `json:"prefill_seconds,omitempty"`

	// Answers counts every answer to a submit by HTTP status ("200",
	// "429", "503", ...; "no answer" when the server was not reached): a
	// 429 is retried with backoff and counted each time, any other
	// refusal counted and that execution left unsubmitted.
	Answers map[string]int64 `json:"answers"`

	Submitted  int `json:"submitted"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`     // ended, but not completed (failed or cancelled)
	Incomplete int `json:"incomplete"` // executions that did not complete, Failed included

	// Seconds runs from the first submit to the last completion.
	Seconds             float64 `json:"seconds"`
	ExecutionsPerSecond float64 `json:"executions_per_second"`
	StepsPerSecond      float64 `json:"steps_per_second"`
	// SubmitRate is the achieved arrival rate (first to last submit).
	SubmitRate float64 `json:"submit_rate"`
	// Drain: DrainSeconds runs from the workers' start (every execution
	// submitted by then) to the last completion, and DrainPerSecond is
	// the completed executions over it.
	Drain          bool    `json:"drain,omitempty"`
	DrainSeconds   float64 `json:"drain_seconds,omitempty"`
	DrainPerSecond float64 `json:"drain_per_second,omitempty"`

	SubmitToStart    Latency `json:"submit_to_start"`
	SubmitToComplete Latency `json:"submit_to_complete"`

	// CPUMillisPerExecution is this process's CPU time from the first
	// submit to the last completion, per completed execution: the server,
	// workers, NATS and load generator when self-contained, the load
	// generator alone with --server; never the database's. On a shared,
	// noisy machine it moves less than throughput.
	CPUMillisPerExecution float64 `json:"cpu_ms_per_execution,omitempty"`

	// Statements is what pg_stat_statements counted in the database from
	// the first submit to the last completion (self-contained PostgreSQL
	// with the extension installed; nil otherwise).
	Statements *Statements `json:"statements,omitempty"`
	// Storage is the event store tables' size after the run
	// (self-contained; nil when it could not be read).
	Storage *Storage `json:"storage,omitempty"`

	// Redeliveries is nil when the consumer could not be inspected.
	Redeliveries *int64 `json:"redeliveries"`
	TimedOut     bool   `json:"timed_out,omitempty"`
}

// IncompleteError reports executions that did not complete; the Result
// returned with it is complete otherwise.
type IncompleteError struct {
	Incomplete, Executions int
	TimedOut               bool
}

func (e *IncompleteError) Error() string {
	msg := fmt.Sprintf("%d of %d executions did not complete", e.Incomplete, e.Executions)
	if e.TimedOut {
		msg += " before --timeout; raise --timeout, lower --executions, or check the workers (millrace nats info)"
	} else {
		msg += "; inspect them with `millrace executions` and `millrace events ID`"
	}
	return msg
}

// run is one execution as the benchmark sees it.
type run struct {
	id       int64
	submit   time.Time
	status   api.ExecStatus
	ended    time.Time
	startLat time.Duration // -1 until sampled
}

// Run performs one benchmark. It returns a Result whenever the run got as
// far as submitting; the error is then nil or an *IncompleteError.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	res := &Result{Executions: opts.Executions, Steps: opts.Steps, Concurrency: opts.Concurrency, Rate: opts.Rate, Target: opts.Server, Drain: opts.Drain}
	token := opts.Token
	urls := []string{opts.Server}
	var st *stack
	var sdb *db
	if opts.Store != "" {
		var err error
		if st, err = startStack(ctx, &opts); err != nil {
			return nil, err
		}
		defer st.stop()
		token, res.Target, res.Schema, urls = st.token, st.kind, st.schema, st.urls
		res.Workers, res.WorkerConcurrency, res.Servers = opts.Workers, opts.WorkerConcurrency, len(st.urls)
		res.WorkerAck = cmpOr(opts.WorkerAck, config.DefaultWorkerAck)
		if sdb, err = openDB(st.kind, st.dbURL); err != nil {
			return nil, err
		}
		defer sdb.close()
	}
	clients := make([]*client.Client, len(urls))
	for i, u := range urls {
		clients[i] = client.New(u).WithToken(token)
		// A connection dialed but never used would hold up the server's
		// graceful shutdown for 5 s (net/http treats it as active until then).
		defer clients[i].HTTP.CloseIdleConnections()
	}
	srv := clients[0]
	reg, err := srv.Register(ctx, chainPlaybook(opts.Steps))
	if err != nil {
		return nil, fmt.Errorf("register the benchmark playbook: %w", err)
	}
	if opts.Prefill > 0 {
		if err := prefill(ctx, srv, reg, sdb, &opts, res); err != nil {
			return nil, err
		}
	}

	cons := inspectConsumer(ctx, opts.NATS)
	if cons != nil {
		defer cons.close()
	}
	before, beforeErr := cons.delivered(ctx)
	var stmts0 statementCounts
	if sdb != nil {
		if stmts0, err = sdb.statementCounts(ctx); err != nil {
			opts.Log.Info("statements per execution not measured: pg_stat_statements is not readable (CREATE EXTENSION pg_stat_statements, with shared_preload_libraries)", "err", err)
		}
	}

	prog := newProgress(opts.Progress, opts.ProgressTTY, opts.Executions)
	prog.start()
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	stopEstimate := func() {}
	if !opts.Drain {
		stopEstimate = prog.estimate(runCtx, srv)
	}
	cpu0 := processCPU()
	answers := &answerCount{}
	runs, err := submit(runCtx, clients, reg, &opts, prog, answers)
	res.Answers = answers.snapshot()
	stopEstimate()
	var workersStarted time.Time
	if err == nil && opts.Drain {
		// Every execution is stored and its notification on its way: now
		// the backlog is drained.
		workersStarted = time.Now()
		if err = st.startWorkers(ctx); err != nil {
			err = fmt.Errorf("start the workers: %w", err)
		}
	}
	if err == nil {
		err = awaitAll(runCtx, srv, runs, prog)
	}
	cpu := processCPU() - cpu0
	prog.stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil && runCtx.Err() == nil {
		return nil, err
	}
	res.TimedOut = runCtx.Err() != nil

	actx, acancel := context.WithTimeout(ctx, afterTimeout)
	defer acancel()
	if sdb != nil && stmts0 != nil {
		if stmts1, err := sdb.statementCounts(actx); err == nil {
			res.Statements = statementsSince(stmts0, stmts1, opts.Executions)
		}
	}
	if after, err := cons.delivered(actx); err == nil && beforeErr == nil {
		n := after.redeliveries(before)
		res.Redeliveries = &n
	}
	sampleStarts(actx, srv, runs, opts.Sample)
	summarize(res, runs)
	if opts.Drain && res.Completed > 0 {
		var last time.Time
		for _, r := range runs {
			if r.status == api.ExecCompleted && r.ended.After(last) {
				last = r.ended
			}
		}
		if res.DrainSeconds = last.Sub(workersStarted).Seconds(); res.DrainSeconds > 0 {
			res.DrainPerSecond = float64(res.Completed) / res.DrainSeconds
		}
	}
	if res.Completed > 0 && cpu > 0 {
		res.CPUMillisPerExecution = float64(cpu) / float64(time.Millisecond) / float64(res.Completed)
	}
	if sdb != nil {
		if res.Storage, err = sdb.storage(actx); err != nil {
			opts.Log.Warn("bytes per execution not measured", "err", err)
		}
	}
	if res.Incomplete > 0 {
		return res, &IncompleteError{Incomplete: res.Incomplete, Executions: res.Executions, TimedOut: res.TimedOut}
	}
	return res, nil
}

// prefill stores opts.Prefill finished executions: one real execution of
// reg, then opts.Prefill-1 copies of its rows (db.prefill).
func prefill(ctx context.Context, srv *client.Client, reg api.Registered, sdb *db, opts *Options, res *Result) error {
	began := time.Now()
	st, err := srv.Execute(ctx, reg.Path, reg.Version, nil)
	if err != nil {
		return fmt.Errorf("prefill: submit the template execution: %w", err)
	}
	tmpl := []run{{id: st.ExecutionID, submit: began, startLat: -1}}
	wctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if err := awaitAll(wctx, srv, tmpl, newProgress(nil, false, 1)); err != nil {
		return fmt.Errorf("prefill: wait for the template execution: %w", err)
	}
	if tmpl[0].status != api.ExecCompleted {
		return fmt.Errorf("prefill: the template execution %d ended %s, not completed; inspect it with `millrace events %d`", st.ExecutionID, tmpl[0].status, st.ExecutionID)
	}
	report := func(n int) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "prefill: %d/%d executions stored (%.0fs)\n", n+1, opts.Prefill, time.Since(began).Seconds())
		}
	}
	if err := sdb.prefill(ctx, st.ExecutionID, opts.Prefill-1, report); err != nil {
		return err
	}
	res.Prefilled, res.PrefillSeconds = opts.Prefill, time.Since(began).Seconds()
	return nil
}

// chainPlaybook is a chain of k noop steps at bench/chain-k.
func chainPlaybook(k int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: bench-chain-%d
  path: bench/chain-%d
  description: millrace bench flows, a chain of %d noop steps
workflow:
`, k, k, k)
	for i := 1; i <= k; i++ {
		name := "start"
		if i > 1 {
			name = fmt.Sprintf("step%d", i)
		}
		fmt.Fprintf(&b, "  - step: %s\n    tool:\n      kind: noop\n", name)
		if i < k {
			fmt.Fprintf(&b, "    next:\n      arcs:\n        - step: step%d\n", i+1)
		}
	}
	return b.String()
}

// submit starts opts.Executions executions from opts.Concurrency
// goroutines. With a rate, a pacer hands out slots at start+i/rate; a slot
// waits while every submitter is busy, which shows as a lower SubmitRate.
func submit(ctx context.Context, srvs []*client.Client, reg api.Registered, opts *Options, prog *progress, answers *answerCount) ([]run, error) {
	runs := make([]run, opts.Executions)
	slots := make(chan int)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		defer close(slots)
		start := time.Now()
		var timer *time.Timer
		for i := range runs {
			if opts.Rate > 0 {
				at := start.Add(time.Duration(float64(i) / opts.Rate * float64(time.Second)))
				if d := time.Until(at); d > 0 {
					if timer == nil {
						timer = time.NewTimer(d)
						defer timer.Stop()
					} else {
						timer.Reset(d)
					}
					select {
					case <-timer.C:
					case <-ctx.Done():
						return
					}
				}
			}
			select {
			case slots <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for j := range min(opts.Concurrency, opts.Executions) {
		// Submitter j sends to server j mod servers, retrying a 429 itself
		// so that every answer is counted (answers.go).
		srv := *srvs[j%len(srvs)]
		srv.Retry = client.Retry{}
		wg.Go(func() {
			for i := range slots {
				t := time.Now()
				st, ok := submitOne(ctx, &srv, reg, answers)
				if !ok {
					continue // counted; this execution was not accepted
				}
				runs[i] = run{id: st.ExecutionID, submit: t, startLat: -1}
				prog.submitted.Add(1)
			}
		})
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return runs, cause
	}
	return runs, nil
}

// awaitAll pages through the execution list until every submitted run has
// ended. Ids are time-ordered and the list is newest first, so a pass stops
// at the oldest run still pending.
func awaitAll(ctx context.Context, srv *client.Client, runs []run, prog *progress) error {
	pending := make(map[int64]int, len(runs))
	for i, r := range runs {
		if r.id != 0 {
			pending[r.id] = i
		}
	}
	done := 0
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for len(pending) > 0 {
		oldest := int64(math.MaxInt64)
		for id := range pending {
			oldest = min(oldest, id)
		}
		for page := 1; ; page++ {
			p, err := srv.Executions(ctx, page, pageSize)
			if err != nil {
				return fmt.Errorf("list executions to find completed ones: %w", err)
			}
			for _, e := range p.Executions {
				i, ok := pending[e.ExecutionID]
				if !ok || e.Status == api.ExecRunning {
					continue
				}
				delete(pending, e.ExecutionID)
				runs[i].status = e.Status
				if e.EndedAt != nil {
					runs[i].ended = *e.EndedAt
				}
				done++
			}
			n := len(p.Executions)
			if n < pageSize || p.Executions[n-1].ExecutionID <= oldest {
				break
			}
		}
		prog.setCompleted(int64(done))
		if len(pending) == 0 {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// sampleStarts fills startLat for an evenly spaced sample of at most n
// completed runs, from their first command.started event.
func sampleStarts(ctx context.Context, srv *client.Client, runs []run, n int) {
	var done []int
	for i, r := range runs {
		if r.status == api.ExecCompleted {
			done = append(done, i)
		}
	}
	if len(done) == 0 {
		return
	}
	pick := make(chan int)
	var wg sync.WaitGroup
	for range min(sampleFetchers, len(done)) {
		wg.Go(func() {
			for i := range pick {
				evs, err := srv.Events(ctx, runs[i].id)
				if err != nil {
					continue // the sample is smaller; Samples says by how much
				}
				for _, e := range evs {
					if e.EventType == api.EvCommandStarted {
						runs[i].startLat = e.CreatedAt.Sub(runs[i].submit)
						break
					}
				}
			}
		})
	}
	take := min(n, len(done))
	for k := range take {
		// Evenly spaced over submission order, so the sample spans the run.
		select {
		case pick <- done[k*len(done)/take]:
		case <-ctx.Done():
		}
	}
	close(pick)
	wg.Wait()
}

func summarize(res *Result, runs []run) {
	var first, lastSubmit, lastEnd time.Time
	var starts, completes []time.Duration
	for _, r := range runs {
		if r.id == 0 {
			continue
		}
		res.Submitted++
		if first.IsZero() || r.submit.Before(first) {
			first = r.submit
		}
		if r.submit.After(lastSubmit) {
			lastSubmit = r.submit
		}
		switch r.status {
		case api.ExecCompleted:
			res.Completed++
			completes = append(completes, r.ended.Sub(r.submit))
			if r.ended.After(lastEnd) {
				lastEnd = r.ended
			}
			if r.startLat >= 0 {
				starts = append(starts, r.startLat)
			}
		case "":
		default:
			res.Failed++
		}
	}
	res.Incomplete = res.Executions - res.Completed
	if res.Submitted > 1 {
		if d := lastSubmit.Sub(first).Seconds(); d > 0 {
			res.SubmitRate = float64(res.Submitted-1) / d
		}
	}
	if res.Completed > 0 {
		res.Seconds = lastEnd.Sub(first).Seconds()
		if res.Seconds > 0 {
			res.ExecutionsPerSecond = float64(res.Completed) / res.Seconds
			res.StepsPerSecond = res.ExecutionsPerSecond * float64(res.Steps)
		}
	}
	res.SubmitToStart = distribution(starts)
	res.SubmitToComplete = distribution(completes)
}

// distribution computes nearest-rank percentiles.
func distribution(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return ms(ds[max(i, 0)])
	}
	return Latency{Samples: len(ds), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(ds[len(ds)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// consumer reads the worker pool's consumer, or is nil when NATS is out of
// reach (redeliveries are then unknown).
type consumer struct {
	conn *bus.Conn
	cfg  config.NATS
}

func inspectConsumer(ctx context.Context, n config.NATS) *consumer {
	ctx, cancel := context.WithTimeout(ctx, natsInspectTimeout)
	defer cancel()
	conn, err := bus.Connect(ctx, n.Bus("millrace-bench"), nil)
	if err != nil {
		return nil
	}
	return &consumer{conn: conn, cfg: n}
}

func (c *consumer) close() { c.conn.Close() }

// deliveries is a reading of the consumer's delivery counters.
type deliveries struct{ all, distinct uint64 }

// redeliveries since an earlier reading: every delivery counts in the
// consumer sequence, each message once in the stream sequence (the pool's
// consumer has no filter, so it sees every stream message).
func (d deliveries) redeliveries(before deliveries) int64 {
	return int64(d.all-before.all) - int64(d.distinct-before.distinct)
}

var errNoConsumer = errors.New("the worker pool's consumer could not be inspected")

func (c *consumer) delivered(ctx context.Context) (deliveries, error) {
	if c == nil {
		return deliveries{}, errNoConsumer
	}
	cons, err := c.conn.JS.Consumer(ctx, c.cfg.Stream, c.cfg.Consumer)
	if err != nil {
		return deliveries{}, err
	}
	var info *jetstream.ConsumerInfo
	if info, err = cons.Info(ctx); err != nil {
		return deliveries{}, err
	}
	return deliveries{all: info.Delivered.Consumer, distinct: info.Delivered.Stream}, nil
}

// progress tracks counts for the live display.
type progress struct {
	w         io.Writer
	tty       bool
	total     int
	submitted atomic.Int64
	completed atomic.Int64
	began     time.Time
	quit      chan struct{}
	done      chan struct{}
}

const (
	// progressTTYEvery redraws the in-place line.
	progressTTYEvery = 250 * time.Millisecond
	// progressPlainEvery spaces plain progress lines (logs, CI).
	progressPlainEvery = time.Second
)

func newProgress(w io.Writer, tty bool, total int) *progress {
	return &progress{w: w, tty: tty, total: total, quit: make(chan struct{}), done: make(chan struct{})}
}

func (p *progress) start() {
	p.began = time.Now()
	if p.w == nil {
		close(p.done)
		return
	}
	every := progressPlainEvery
	if p.tty {
		every = progressTTYEvery
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				p.draw()
				if p.tty {
					fmt.Fprintln(p.w)
				}
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
}

func (p *progress) stop() {
	close(p.quit)
	<-p.done
}

func (p *progress) draw() {
	el := time.Since(p.began).Seconds()
	s, c := p.submitted.Load(), p.completed.Load()
	line := fmt.Sprintf("submitted %d/%d (%.0f/s)  completed %d (%.0f/s)  %.1fs", s, p.total, float64(s)/el, c, float64(c)/el, el)
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K"+line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) setCompleted(n int64) {
	for {
		cur := p.completed.Load()
		if n <= cur || p.completed.CompareAndSwap(cur, n) {
			return
		}
	}
}

// estimate keeps the completed count roughly current while submitting,
// from the server's count of running executions (health stats), and
// returns a function that stops it. Executions other clients run on a
// shared server are discounted by the count at the start.
func (p *progress) estimate(ctx context.Context, srv *client.Client) func() {
	if p.w == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	running := func() (int64, bool) {
		h, err := srv.Health(ctx)
		if err != nil || h.Stats == nil {
			return 0, false
		}
		return h.Stats.ExecutionsRunning, true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		base, _ := running()
		t := time.NewTicker(progressTTYEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			sub := p.submitted.Load()
			if n, ok := running(); ok {
				p.setCompleted(sub - max(n-base, 0))
			}
		}
	}()
	return func() { cancel(); <-done }
}
