// Package worker runs commands. It pulls notifications from the durable
// JetStream consumer, claims each command through the API (a lease), runs its
// tool, and reports the outcome as events. The notification is only a
// wake-up: the lease in the database decides who runs what, so duplicate,
// stale or replayed notifications are harmless and are acknowledged at once.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/tools"
)

const (
	// releaseTimeout bounds the calls a worker makes while shutting down.
	releaseTimeout = 5 * time.Second
	// maxNakDelay caps the redelivery delay for transient failures.
	maxNakDelay = 10 * time.Second
	// maxReportBackoff caps the wait between attempts to report a result
	// while the server is unreachable.
	maxReportBackoff = 5 * time.Second
)

var (
	mRun       = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_worker_commands_total", Help: "Commands run by this worker, by outcome."}, []string{"outcome"})
	mDup       = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_worker_duplicate_notifications_total", Help: "Notifications acknowledged without running: the command was claimed elsewhere or had ended."})
	mRedeliver = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_worker_redeliveries_total", Help: "Notifications that arrived with NumDelivered > 1."})
	mInFlight  = promauto.NewGauge(prometheus.GaugeOpts{Name: "millrace_worker_in_flight", Help: "Commands running now."})
)

// Worker is one member of the pool.
type Worker struct {
	cfg  config.Worker
	bcfg bus.Config
	log  *slog.Logger
	api  *client.Client
	conn *bus.Conn
	id   string
	sem  chan struct{}
	wg   sync.WaitGroup

	// hard is cancelled when the shutdown grace runs out: running tools
	// are stopped and their claims released.
	hard       context.Context
	cancelHard context.CancelFunc

	// Claims and final reports go out in batches (batch.go).
	claims  *batcher[client.ClaimItem, client.Claimed]
	reports *batcher[client.Report, client.Ack]
}

// New connects to NATS and makes sure the stream and consumer exist.
func New(ctx context.Context, cfg config.Worker, log *slog.Logger) (*Worker, error) {
	if cfg.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency must be >= 1, got %d (NATS_WORKER_CONCURRENCY)", cfg.Concurrency)
	}
	if cfg.WorkerID == "" {
		host, _ := os.Hostname()
		cfg.WorkerID = fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.IntN(1<<16))
	}
	bcfg := cfg.NATS.Bus("millrace-worker " + cfg.WorkerID)
	conn, err := bus.ConnectRetry(ctx, bcfg, log) // workers may start before NATS
	if err != nil {
		return nil, err
	}
	if _, err := conn.EnsureStream(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	cons, err := conn.EnsureConsumer(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	// Pace InProgress by the consumer's real ack wait, which an operator
	// may have tuned on the server side.
	if ci := cons.CachedInfo(); ci != nil && ci.Config.AckWait > 0 {
		bcfg.AckWait = ci.Config.AckWait
	}
	if cfg.MaxResultBytes <= 0 {
		cfg.MaxResultBytes = config.DefaultMaxResultBytes
	}
	if cfg.Concurrency > bcfg.MaxAckPending {
		// The seeds' own defaults (100 and 64) trigger this, so it is
		// information, not a warning.
		log.Info("concurrency exceeds the consumer's max_ack_pending, which caps unacknowledged notifications for the whole pool; raise NOETL_WORKER_NATS_MAX_ACK_PENDING to use every slot",
			"concurrency", cfg.Concurrency, "max_ack_pending", bcfg.MaxAckPending)
	}
	hard, cancel := context.WithCancel(context.Background())
	w := &Worker{cfg: cfg, bcfg: bcfg, log: log.With("worker_id", cfg.WorkerID), api: client.New(cfg.ServerURL), conn: conn,
		id: cfg.WorkerID, sem: make(chan struct{}, cfg.Concurrency), hard: hard, cancelHard: cancel}
	w.claims = newBatcher("claim", DefaultBatchSenders, DefaultMaxBatch, w.sendClaims)
	w.reports = newBatcher("report", DefaultBatchSenders, DefaultMaxBatch, w.sendReports)
	return w, nil
}

// sendClaims claims and starts a batch of commands. A server without the
// batch route (404 not_found: an older version) gets single claims.
func (w *Worker) sendClaims(ctx context.Context, items []client.ClaimItem) ([]client.Claimed, []error, error) {
	out, errs, err := w.api.ClaimBatch(ctx, w.id, true, items)
	if !routeMissing(err) {
		return out, errs, err
	}
	out, errs = make([]client.Claimed, len(items)), make([]error, len(items))
	for i, it := range items {
		out[i], errs[i] = w.api.ClaimAndStart(ctx, it.EventID, w.id, it.ExecutionID)
	}
	return out, errs, nil
}

// sendReports posts a batch of final reports; a server without the batch
// route, or one that refuses the batch's size (413), gets them one by one.
func (w *Worker) sendReports(ctx context.Context, reps []client.Report) ([]client.Ack, []error, error) {
	out, errs, err := w.api.ReportBatch(ctx, reps)
	if !routeMissing(err) && client.StatusOf(err) != http.StatusRequestEntityTooLarge {
		return out, errs, err
	}
	out, errs = make([]client.Ack, len(reps)), make([]error, len(reps))
	for i, r := range reps {
		out[i], errs[i] = w.api.Report(ctx, r)
	}
	return out, errs, nil
}

func routeMissing(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == "not_found"
}

// batchedResultLimit is the largest result a report may carry and still go
// out in a batch; bigger ones go alone, so a batch stays far below the
// server's body limit (MILLRACE_MAX_BODY_BYTES, 8 MiB by default).
const batchedResultLimit = 16 << 10

// ID is the worker's identity on claims.
func (w *Worker) ID() string { return w.id }

// Run fetches and runs commands until ctx ends (SIGTERM). It then stops
// fetching, lets running commands finish within the shutdown grace, releases
// whatever is still running after that, and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	defer w.conn.Close()
	defer w.cancelHard()
	defer w.reports.close()
	defer w.claims.close()
	// Idle keep-alive connections would hold the server's graceful
	// shutdown for its full timeout (net/http counts new ones as active).
	defer w.api.HTTP.CloseIdleConnections()
	w.log.Info("worker started", "server", w.cfg.ServerURL, "stream", w.bcfg.Stream, "consumer", w.bcfg.Consumer, "concurrency", w.cfg.Concurrency)
	w.fetchLoop(ctx)

	w.log.Info("worker stopping: no new work is fetched; waiting for running commands", "grace", w.cfg.ShutdownGrace)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownGrace):
		w.log.Warn("shutdown grace ran out; stopping running commands and releasing their claims")
		w.cancelHard()
		select {
		case <-done:
		case <-time.After(2 * releaseTimeout):
			w.log.Error("some commands did not stop in time; their leases will expire and they will run again elsewhere")
		}
	}
	w.log.Info("worker stopped")
	return nil
}

func (w *Worker) fetchLoop(ctx context.Context) {
	var cons jetstream.Consumer
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		// Wait for a free slot before asking for work, so a notification
		// never waits in our buffer while its ack wait runs down.
		select {
		case w.sem <- struct{}{}:
			<-w.sem
		case <-ctx.Done():
			return
		}
		if cons == nil {
			c, err := w.ensure(ctx)
			if err != nil {
				backoff = w.pause(ctx, backoff, "cannot reach the command consumer; retrying", err)
				continue
			}
			cons = c
		}
		free := cap(w.sem) - len(w.sem)
		fctx, cancel := context.WithTimeout(ctx, w.bcfg.FetchTimeout)
		hb := min(w.bcfg.FetchHeartbeat, w.bcfg.FetchTimeout/2)
		batch, err := cons.Fetch(free, jetstream.FetchContext(fctx), jetstream.FetchHeartbeat(hb))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			cons = nil
			backoff = w.pause(ctx, backoff, "fetch failed; re-checking stream and consumer", err)
			continue
		}
		bus.Dispatch(batch, w.sem, &w.wg, w.handle)
		cancel()
		if err := batch.Error(); bus.BatchFailed(err) && ctx.Err() == nil {
			// A missing heartbeat or a deleted consumer (NATS restarted).
			cons = nil
			backoff = w.pause(ctx, backoff, "pull request ended with an error; re-checking stream and consumer", err)
			continue
		}
		backoff = 0
	}
}

func (w *Worker) ensure(ctx context.Context) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.conn.EnsureStream(ctx); err != nil {
		return nil, err
	}
	return w.conn.EnsureConsumer(ctx)
}

func (w *Worker) pause(ctx context.Context, backoff time.Duration, msg string, err error) time.Duration {
	backoff = min(max(backoff*2, 100*time.Millisecond), 5*time.Second)
	w.log.Warn(msg, "err", err, "retry_in", backoff)
	select {
	case <-ctx.Done():
	case <-time.After(backoff):
	}
	return backoff
}

// handle processes one notification from receipt to ack.
func (w *Worker) handle(msg jetstream.Msg) {
	md, _ := msg.Metadata()
	if md != nil && md.NumDelivered > 1 {
		mRedeliver.Inc()
	}
	n, err := bus.DecodeNotification(msg.Data())
	if err != nil {
		// Poison: it will never decode, so redelivering it is pointless.
		w.log.Error("terminating undecodable notification", "err", err, "data", truncate(msg.Data(), 200))
		_ = msg.TermWithReason("undecodable notification: " + err.Error())
		return
	}
	log := w.log.With("command_id", n.CommandID)
	ctx := w.hard
	cl, err := w.claims.do(ctx, client.ClaimItem{EventID: n.EventID, ExecutionID: n.ExecutionID})
	if err != nil {
		switch st := client.StatusOf(err); {
		case st == http.StatusConflict:
			// Claimed elsewhere or already ended: nothing to do.
			mDup.Inc()
			_ = msg.Ack()
		case st == http.StatusNotFound || st == http.StatusBadRequest:
			log.Error("terminating notification for a command the server does not know", "err", err)
			_ = msg.TermWithReason("claim refused: " + err.Error())
		default:
			delay := nakDelay(md)
			log.Warn("claim failed; the notification will be redelivered", "err", err, "delay", delay)
			_ = msg.NakWithDelay(delay)
		}
		return
	}
	mInFlight.Inc()
	defer mInFlight.Dec()
	w.run(log, msg, cl)
}

// run executes a claimed command.
func (w *Worker) run(log *slog.Logger, msg jetstream.Msg, cl client.Claimed) {
	lease := time.Duration(cl.LeaseTTLMillis) * time.Millisecond
	if lease <= 0 {
		lease = 30 * time.Second
	}
	beat := min(lease, w.bcfg.AckWait) / 3

	// toolCtx ends when the shutdown grace runs out or the lease is lost.
	toolCtx, stopTool := context.WithCancel(w.hard)
	defer stopTool()
	var lost bool
	var lostMu sync.Mutex
	keepDone := make(chan struct{})
	stopKeep := make(chan struct{})
	go func() {
		defer close(keepDone)
		// NATS hears we are alive; the heartbeat renews the lease.
		bus.KeepAlive(msg, beat, stopKeep, func() bool {
			hctx, cancel := context.WithTimeout(w.hard, beat)
			_, err := w.api.Report(hctx, client.Report{EventType: api.EvCommandHeartbeat, EventID: cl.EventID, ExecutionID: cl.ExecutionID, WorkerID: w.id, Attempt: cl.Attempt})
			cancel()
			if client.StatusOf(err) == http.StatusConflict {
				log.Warn("lease lost (cancelled, re-claimed or ended); stopping the command", "err", err)
				lostMu.Lock()
				lost = true
				lostMu.Unlock()
				stopTool()
				return false
			}
			return true
		})
	}()
	keepalive := func() {
		select {
		case <-stopKeep:
		default:
			close(stopKeep)
		}
		<-keepDone
	}
	defer keepalive()

	res, runErr := w.execute(toolCtx, cl)

	lostMu.Lock()
	wasLost := lost
	lostMu.Unlock()
	if wasLost {
		mRun.WithLabelValues("lease_lost").Inc()
		_ = msg.Ack()
		return
	}
	if w.hard.Err() != nil && runErr != nil {
		// Shutdown grace ran out mid-command: give the lease back so
		// another worker takes it at once. (A tool that finished anyway
		// is reported below: its result is not thrown away.)
		keepalive()
		rctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		if err := w.api.Release(rctx, cl.EventID, w.id, cl.Attempt); err != nil {
			log.Warn("could not release the claim; it will expire by itself", "err", err)
		}
		_ = msg.Nak()
		mRun.WithLabelValues("released").Inc()
		return
	}

	rep := client.Report{EventType: api.EvCommandCompleted, EventID: cl.EventID, ExecutionID: cl.ExecutionID, WorkerID: w.id, Attempt: cl.Attempt}
	if runErr != nil {
		rep.EventType = api.EvCommandFailed
		te := &tools.Error{}
		if !errors.As(runErr, &te) {
			te = &tools.Error{Kind: "worker", Message: runErr.Error()}
		}
		rep.Error = &client.ToolError{Kind: te.Kind, Message: te.Message, Retryable: te.Retryable}
		if te.Result != nil {
			res = te.Result
		}
	}
	if res != nil {
		b, err := json.Marshal(res)
		switch {
		case err != nil:
			rep.EventType = api.EvCommandFailed
			rep.Error = &client.ToolError{Kind: "worker", Message: "tool result is not JSON-encodable: " + err.Error()}
		case len(b) > w.cfg.MaxResultBytes:
			// Re-running would produce the same result and the same
			// refusal forever: fail the command instead.
			rep.EventType, rep.Result = api.EvCommandFailed, nil
			rep.Error = &client.ToolError{Kind: "worker", Message: fmt.Sprintf(
				"the result is %d bytes, over the limit of %d (MILLRACE_MAX_RESULT_BYTES); return less data or write it to a file or table", len(b), w.cfg.MaxResultBytes)}
		default:
			rep.Result = b
		}
	}
	rctx := w.hard
	if w.hard.Err() != nil { // the tool finished just as the grace ran out
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
	}
	// Keep the heartbeat going while we try to report: the server may be
	// restarting, and the lease must not lapse meanwhile.
	err := w.report(rctx, log, rep)
	if st := client.StatusOf(err); st >= 400 && st < 500 && st != http.StatusConflict {
		// The server refuses this report (too large, malformed) and will
		// refuse it again: record the failure instead of re-running.
		log.Error("the server refused the result; reporting the command as failed", "err", err)
		rep.EventType, rep.Result = api.EvCommandFailed, nil
		rep.Error = &client.ToolError{Kind: "worker", Message: "the server refused the result: " + err.Error()}
		err = w.report(rctx, log, rep)
	}
	if err != nil {
		if client.StatusOf(err) == http.StatusConflict {
			mRun.WithLabelValues("superseded").Inc()
			_ = msg.Ack()
			return
		}
		log.Error("giving up reporting the result; the lease will expire and the command will run again", "err", err)
		_ = msg.Nak()
		return
	}
	if runErr != nil {
		mRun.WithLabelValues("failed").Inc()
	} else {
		mRun.WithLabelValues("completed").Inc()
	}
	_ = msg.Ack()
}

// report posts the final event, retrying while the server is unreachable or
// failing, until it answers or the shutdown grace runs out.
func (w *Worker) report(parent context.Context, log *slog.Logger, rep client.Report) error {
	backoff := 100 * time.Millisecond
	for {
		var err error
		if len(rep.Result) <= batchedResultLimit {
			_, err = w.reports.do(parent, rep)
		} else {
			ctx, cancel := context.WithTimeout(parent, 30*time.Second)
			_, err = w.api.Report(ctx, rep)
			cancel()
		}
		st := client.StatusOf(err)
		if err == nil || (st >= 400 && st < 500) {
			return err
		}
		log.Warn("reporting the result failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-parent.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxReportBackoff)
	}
}

func nakDelay(md *jetstream.MsgMetadata) time.Duration {
	n := uint64(1)
	if md != nil {
		n = md.NumDelivered
	}
	d := 250 * time.Millisecond << min(n, 8)
	return min(d, maxNakDelay)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
