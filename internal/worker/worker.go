// Package worker is the one runtime every worker runs in, whatever stream
// it serves. The runtime pulls messages from a kind's durable consumers
// (lanes), runs each in a slot of one shared pool, keeps it from
// redelivery with InProgress while the kind heartbeats its claim (or, with
// Config.AckOnClaim, acknowledges it once the claim is committed and leaves
// the job to the claim's lease), retries NATS with jittered backoff,
// terminates poison, and shuts down gracefully:
// on ctx's end it stops fetching, lets running jobs finish within the
// grace, then cancels them, releases their claims, and returns once every
// goroutine it started has ended.
//
// A message is only a wake-up: the claim (a lease in the database) decides
// who runs what, so duplicate, stale or replayed messages are harmless and
// are acknowledged at once.
//
// What differs between streams is a Kind (kind.go): its lanes, how it
// ensures its stream, how it decodes a message into a Job, and how a Job
// claims, heartbeats, runs, reports and releases. The kinds are
// worker/commands (flow commands from NOETL_COMMANDS) and worker/queries
// (warehouse queries from WAREHOUSE_QUERY_JOBS, two lanes). A new stream
// kind, say pre-aggregates, is a package with a Kind whose Decode returns
// its Job, and a constructor:
//
//	func New(ctx context.Context, cfg config.Worker, log *slog.Logger) (*worker.Runtime, error) {
//		k := &kind{api: client.New(cfg.ServerURL), id: worker.DefaultID(cfg.WorkerID)}
//		return worker.New(ctx, worker.Config{ID: k.id, Concurrency: cfg.Concurrency,
//			ShutdownGrace: cfg.ShutdownGrace, NATS: cfg.NATS.Bus("millrace-preagg-worker")}, k, log)
//	}
//
// and a case in `millrace worker --stream`.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/backoff"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/lifecycle"
	"github.com/millrace/millrace/internal/telemetry"
)

const (
	// DefaultLease paces heartbeats for a Job that names no lease.
	DefaultLease = 30 * time.Second
	// ReleaseTimeout bounds each call a job makes after the shutdown grace
	// ran out (a release, a last report).
	ReleaseTimeout = 5 * time.Second
	// laneFetchWait bounds one pull when a kind has several lanes: short,
	// so that a lane's request never holds more messages than there are
	// slots by the time they arrive.
	laneFetchWait = 2 * time.Second
	// ensureTimeout bounds one look-up or creation of a lane's consumer.
	ensureTimeout = 10 * time.Second
)

// Delays between attempts to reach NATS, and before a message whose claim
// failed is redelivered (growing with its delivery count).
var (
	fetchBackoff   = backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	nakMin, nakMax = 250 * time.Millisecond, 10 * time.Second
)

var (
	mJobs      = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_worker_jobs_total", Help: "Jobs this worker took on, by stream and outcome."}, []string{"stream", "outcome"})
	mDup       = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_worker_duplicate_notifications_total", Help: "Messages acknowledged without running: the job was claimed elsewhere or had ended."}, []string{"stream"})
	mRedeliver = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_worker_redeliveries_total", Help: "Messages that arrived with NumDelivered > 1."}, []string{"stream"})
	mInFlight  = promauto.NewGaugeVec(prometheus.GaugeOpts{Name: "millrace_worker_in_flight", Help: "Jobs running now."}, []string{"stream"})
)

// Config is what the runtime needs besides its Kind.
type Config struct {
	// ID identifies this worker on claims (see DefaultID).
	ID            string
	Concurrency   int
	ShutdownGrace time.Duration
	// Pool is the worker pool this worker serves ("" is the default), as
	// its presence beats tell servers.
	Pool string
	// NATS is how to reach NATS; FetchTimeout and FetchHeartbeat pace
	// the pulls.
	NATS bus.Config
	// Traces makes the job spans (nil: tracing off); Run shuts it down,
	// exporting what is buffered, when it returns.
	Traces *telemetry.Provider
	// AckOnClaim acknowledges a message as soon as its job's claim
	// succeeded, instead of after the report was accepted. From then on
	// the claim alone keeps the job: its lease, renewed by Heartbeat, and
	// the server's reaper, which re-notifies the job if the lease expires
	// (a dead worker). So the consumer's max_ack_pending counts only
	// messages not yet claimed, not running jobs. The job still holds its
	// slot until it ends: a lane never fetches more than its free slots.
	// Only for kinds whose server re-notifies expired claims (commands).
	AckOnClaim bool
}

// DefaultID returns id, or host-pid-random when it is empty.
func DefaultID(id string) string {
	if id != "" {
		return id
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.IntN(1<<16))
}

// Runtime runs one kind's jobs.
type Runtime struct {
	cfg   Config
	kind  Kind
	log   *slog.Logger
	conn  *bus.Conn
	lanes []Lane
	slots *slots
	// jobs owns every running job; its context is hard's.
	jobs *lifecycle.Group

	// hard ends when the shutdown grace runs out: running jobs are
	// stopped and their claims released.
	hard       context.Context
	cancelHard context.CancelFunc

	jobsDone       *prometheus.CounterVec
	dup, redeliver prometheus.Counter
	inFlight       prometheus.Gauge
	// tracer makes a span per job (nil: tracing off).
	tracer trace.Tracer
}

// New connects to NATS (waiting for it: workers may start first) and
// makes sure the kind's stream and consumers exist.
func New(ctx context.Context, cfg Config, kind Kind, log *slog.Logger) (*Runtime, error) {
	if cfg.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency must be >= 1, got %d (NATS_WORKER_CONCURRENCY)", cfg.Concurrency)
	}
	cfg.ID = DefaultID(cfg.ID)
	if cfg.NATS.Name == "" {
		cfg.NATS.Name = "millrace-worker " + cfg.ID
	}
	conn, err := bus.ConnectRetry(ctx, cfg.NATS, log)
	if err != nil {
		return nil, err
	}
	if err := kind.Ensure(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	name := kind.Name()
	hard, cancel := context.WithCancel(context.Background())
	return &Runtime{cfg: cfg, kind: kind, log: log.With("worker_id", cfg.ID, "stream", name), conn: conn,
		lanes: kind.Lanes(cfg.Concurrency), slots: newSlots(cfg.Concurrency), jobs: lifecycle.New(hard), hard: hard, cancelHard: cancel,
		jobsDone: mJobs.MustCurryWith(prometheus.Labels{"stream": name}), dup: mDup.WithLabelValues(name),
		redeliver: mRedeliver.WithLabelValues(name), inFlight: mInFlight.WithLabelValues(name),
		tracer: cfg.Traces.Tracer("github.com/millrace/millrace/internal/worker")}, nil
}

// ID is the worker's identity on claims.
func (r *Runtime) ID() string { return r.cfg.ID }

// Run pulls and runs jobs until ctx ends. It then stops fetching, lets
// running jobs finish within the shutdown grace, stops and releases what
// is still running after that, and returns nil once every goroutine it
// started has ended.
func (r *Runtime) Run(ctx context.Context) error {
	defer r.conn.Close()
	defer r.cancelHard()
	consumers := make([]string, len(r.lanes))
	for i, l := range r.lanes {
		consumers[i] = l.Consumer
	}
	ack := "completion"
	if r.cfg.AckOnClaim {
		ack = "claim"
	}
	r.log.Info("worker started", "consumers", consumers, "concurrency", r.cfg.Concurrency, "ack_on", ack)
	lanes := lifecycle.New(ctx)
	lanes.Go("presence", func(ctx context.Context) error { r.beat(ctx); return nil })
	for _, l := range r.lanes {
		lanes.Go("lane "+l.Consumer, func(ctx context.Context) error { r.pull(ctx, l); return nil })
	}
	lanes.Wait(context.Background()) // each pulls until ctx ends
	_ = lanes.Stop()

	r.log.Info("worker stopping: no new work is fetched; waiting for running jobs", "grace", r.cfg.ShutdownGrace)
	if !waitFor(r.jobs, r.cfg.ShutdownGrace) {
		r.log.Warn("shutdown grace ran out; stopping running jobs and releasing their claims")
		r.cancelHard()
		if !waitFor(r.jobs, 2*ReleaseTimeout) {
			r.log.Error("some jobs have not stopped yet; still waiting (if this process is killed, their leases expire and they run again elsewhere)")
		}
	}
	_ = r.jobs.Stop()
	r.kind.Close()
	fctx, cancel := context.WithTimeout(context.Background(), ReleaseTimeout)
	if err := r.cfg.Traces.Shutdown(fctx); err != nil {
		r.log.Warn("some spans were not exported", "err", err)
	}
	cancel()
	r.log.Info("worker stopped")
	return nil
}

// waitFor waits up to d for g's goroutines to end by themselves.
func waitFor(g *lifecycle.Group, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return g.Wait(ctx)
}

// pull fetches from one lane while it has free slots (and, for a lane
// with a Max, while fewer than Max of its jobs run).
func (r *Runtime) pull(ctx context.Context, lane Lane) {
	var capped *slots // only this goroutine acquires it
	if lane.Max > 0 {
		capped = newSlots(lane.Max)
	}
	wait := r.cfg.NATS.FetchTimeout
	if wait <= 0 || (len(r.lanes) > 1 && wait > laneFetchWait) {
		wait = laneFetchWait
	}
	bo := fetchBackoff
	var cons jetstream.Consumer
	var ackWait time.Duration
	for {
		if capped != nil {
			if _, ok := capped.wait(ctx, 0); !ok {
				return
			}
		}
		free, ok := r.slots.wait(ctx, lane.Reserve)
		if !ok {
			return
		}
		if capped != nil {
			// Nobody else takes capped's slots, so this many stay free
			// until the batch is dispatched.
			lf, _ := capped.wait(ctx, 0)
			free = min(free, lf)
		}
		if cons == nil {
			c, err := r.consumer(ctx, lane)
			if err != nil {
				r.pause(ctx, &bo, "cannot reach the consumer; retrying", lane, err)
				continue
			}
			cons, ackWait = c, 0
			if ci := c.CachedInfo(); ci != nil {
				ackWait = ci.Config.AckWait // an operator may have tuned it
			}
		}
		fctx, cancel := context.WithTimeout(ctx, wait)
		opts := []jetstream.FetchOpt{jetstream.FetchContext(fctx)}
		// JetStream wants the heartbeat at most half the request's
		// expiry, which FetchContext sets a little short of the deadline.
		if hb := min(r.cfg.NATS.FetchHeartbeat, wait*2/5); hb > 0 {
			opts = append(opts, jetstream.FetchHeartbeat(hb))
		}
		batch, err := cons.Fetch(free, opts...)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			cons = nil
			r.pause(ctx, &bo, "fetch failed; re-checking stream and consumer", lane, err)
			continue
		}
		r.dispatch(batch, ackWait, capped)
		cancel()
		if err := batch.Error(); bus.BatchFailed(err) && ctx.Err() == nil {
			// A missing heartbeat or a deleted consumer (NATS restarted).
			cons = nil
			r.pause(ctx, &bo, "pull request ended with an error; re-checking stream and consumer", lane, err)
			continue
		}
		bo.Reset()
	}
}

// consumer looks up a lane's consumer, ensuring the kind's stream and
// consumers when it is missing.
func (r *Runtime) consumer(ctx context.Context, lane Lane) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	if c, err := r.conn.JS.Consumer(ctx, lane.Stream, lane.Consumer); err == nil {
		return c, nil
	}
	if err := r.kind.Ensure(ctx, r.conn); err != nil {
		return nil, err
	}
	return r.conn.JS.Consumer(ctx, lane.Stream, lane.Consumer)
}

func (r *Runtime) pause(ctx context.Context, bo *backoff.Backoff, msg string, lane Lane, err error) {
	d := bo.Next()
	r.log.Warn(msg, "consumer", lane.Consumer, "err", err, "retry_in", d)
	backoff.Sleep(ctx, d)
}

// dispatch runs every message of batch in its own goroutine holding a
// slot (and one of capped's, when the lane has a Max), and returns when
// the batch has delivered all it will.
func (r *Runtime) dispatch(batch jetstream.MessageBatch, ackWait time.Duration, capped *slots) {
	for msg := range batch.Messages() {
		if capped != nil {
			capped.acquire()
		}
		r.slots.acquire()
		release := func() {
			r.slots.release()
			if capped != nil {
				capped.release()
			}
		}
		if !r.jobs.Go("job", func(context.Context) error {
			defer release()
			r.handle(msg, ackWait)
			return nil
		}) {
			// Stopping (it cannot happen while a lane pulls, but if it
			// did): leave the message to another worker.
			release()
			_ = msg.Nak()
		}
	}
}

// handle takes one message from receipt to ack.
func (r *Runtime) handle(msg jetstream.Msg, ackWait time.Duration) {
	received := time.Now()
	md, _ := msg.Metadata()
	if md != nil && md.NumDelivered > 1 {
		r.redeliver.Inc()
	}
	job, err := r.kind.Decode(msg.Data())
	if err != nil {
		// Poison: it will never decode, so redelivering it is pointless.
		r.log.Error("terminating undecodable notification", "err", err, "data", truncate(msg.Data(), 200))
		_ = msg.TermWithReason("undecodable notification: " + err.Error())
		r.jobsDone.WithLabelValues("poison").Inc()
		return
	}
	log := r.log.With(job.Attr())
	// ctx is r.hard, carrying the job's span when tracing is on.
	ctx, span := r.startJob(msg, job)
	defer span.End()
	cctx, claimSpan := telemetry.Start(ctx, r.tracer, "claim")
	err = job.Claim(cctx)
	endSpan(claimSpan, err)
	if err != nil {
		switch {
		case errors.Is(err, ErrGone):
			r.dup.Inc()
			_ = msg.Ack()
		case errors.Is(err, ErrUnknown):
			log.Error("terminating a notification for work the server does not know", "err", err)
			_ = msg.TermWithReason("claim refused: " + err.Error())
		default:
			delay := nakDelay(md)
			log.Warn("claim failed; the notification will be redelivered", "err", err, "delay", delay)
			_ = msg.NakWithDelay(delay)
		}
		return
	}
	n := &note{msg: msg}
	if r.cfg.AckOnClaim {
		// The claim is committed: the lease and the reaper keep the job
		// from here. A lost ack only means a redelivery, whose claim the
		// server refuses while our lease lives (ErrGone: acknowledged).
		n.ack()
	}
	r.inFlight.Inc()
	defer r.inFlight.Dec()
	r.run(ctx, log, n, job, ackWait, received)
}

// note is a claimed job's message. Once acknowledged (at the claim, with
// Config.AckOnClaim) it says nothing more to NATS: a NAK or InProgress on
// an acknowledged message means nothing, and the claim decides what
// happens to the job.
type note struct {
	msg   jetstream.Msg
	acked bool
}

func (n *note) ack() {
	if !n.acked {
		n.acked = true
		_ = n.msg.Ack()
	}
}

func (n *note) nak() {
	if !n.acked {
		_ = n.msg.Nak()
	}
}

// inProgress restarts the message's ack wait; nil once it is acknowledged
// (there is nothing to keep alive).
func (n *note) inProgress() func() {
	if n.acked {
		return nil
	}
	return func() { _ = n.msg.InProgress() }
}

// run runs a claimed job, keeps it alive, and reports it.
// ctx is r.hard with the job's span.
func (r *Runtime) run(jctx context.Context, log *slog.Logger, msg *note, job Job, ackWait time.Duration, received time.Time) {
	beat := job.Lease()
	if beat <= 0 {
		beat = DefaultLease
	}
	progress := msg.inProgress()
	if ackWait > 0 && progress != nil {
		beat = min(beat, ackWait)
	}
	beat /= 3
	if progress != nil && time.Since(received) >= beat {
		// A slow claim (a busy server) ate into the ack wait: restart it
		// now rather than at the first beat.
		progress()
	}

	// runCtx ends when the shutdown grace runs out or the lease is lost.
	runCtx, stopRun := context.WithCancel(jctx)
	defer stopRun()
	var lost atomic.Bool
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		// NATS hears we are alive (until the message is acknowledged);
		// the heartbeat renews the claim.
		keepAlive(progress, beat, stop, func() bool {
			hctx, cancel := context.WithTimeout(r.hard, beat)
			err := job.Heartbeat(hctx)
			cancel()
			if errors.Is(err, ErrLost) {
				log.Warn("lease lost (cancelled, re-claimed or ended); stopping the job", "err", err)
				lost.Store(true)
				stopRun()
				return false
			}
			return true
		})
	}()
	var once sync.Once
	stopKeepAlive := func() { once.Do(func() { close(stop) }); <-stopped }
	defer stopKeepAlive()

	runErr := job.Run(runCtx)
	if lost.Load() {
		r.jobsDone.WithLabelValues("lease_lost").Inc()
		msg.ack()
		return
	}
	if r.hard.Err() != nil && runErr != nil {
		// The grace ran out mid-job: give the claim back so another
		// worker takes it at once. (A job that finished anyway is
		// reported below: its result is not thrown away.)
		stopKeepAlive()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(jctx), ReleaseTimeout)
		defer cancel()
		// The release re-notifies the job; the NAK (before an ack at the
		// claim) redelivers this message too, and the loser of the two
		// claims acknowledges its copy.
		if err := job.Release(ctx); err != nil {
			log.Warn("could not release the claim; it will expire by itself", "err", err)
		}
		msg.nak()
		r.jobsDone.WithLabelValues("released").Inc()
		return
	}
	ctx := jctx
	if ctx.Err() != nil { // the job finished just as the grace ran out
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(jctx), ReleaseTimeout)
		defer cancel()
	}
	// The heartbeat goes on while we report: the server may be
	// restarting, and the claim must not lapse meanwhile.
	ctx, reportSpan := telemetry.Start(ctx, r.tracer, "report")
	outcome, err := job.Report(ctx, runErr)
	endSpan(reportSpan, err)
	switch {
	case errors.Is(err, ErrLost):
		r.jobsDone.WithLabelValues("superseded").Inc()
		msg.ack()
	case err != nil:
		log.Error("giving up reporting the result; the claim will expire and the job will run again", "err", err)
		msg.nak()
	default:
		r.jobsDone.WithLabelValues(outcome).Inc()
		msg.ack()
	}
}

// keepAlive calls progress (when not nil: InProgress) every interval and
// then beat, until stop is closed or beat returns false.
func keepAlive(progress func(), every time.Duration, stop <-chan struct{}, beat func() bool) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if progress != nil {
			progress()
		}
		if !beat() {
			return
		}
	}
}

// nakDelay grows with the message's delivery count.
func nakDelay(md *jetstream.MsgMetadata) time.Duration {
	n := uint64(1)
	if md != nil {
		n = md.NumDelivered
	}
	return backoff.Delay(int(min(n, 8)), nakMin, nakMax)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// startJob starts the job's span, "worker <kind> <step>", a child of the
// traceparent the message carries (the relay's publish span). With tracing
// off it returns r.hard and a span that does nothing.
func (r *Runtime) startJob(msg jetstream.Msg, job Job) (context.Context, trace.Span) {
	if r.tracer == nil {
		return telemetry.Start(r.hard, nil, "")
	}
	ctx := r.hard
	if h := msg.Headers(); h != nil {
		ctx = telemetry.WithTraceParent(ctx, h.Get(telemetry.Header))
	}
	name := "worker " + r.kind.Name()
	if s, ok := job.(interface{ Step() string }); ok && s.Step() != "" {
		name += " " + s.Step()
	}
	return r.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("millrace.worker_id", r.cfg.ID)))
}

// endSpan ends span, marking it failed with err.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
