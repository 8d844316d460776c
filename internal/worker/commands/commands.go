// Package commands is the worker kind that runs flow commands. It pulls
// notifications from the durable command consumer (NOETL_COMMANDS), claims
// and starts each command through the API (a lease), runs its tool, and
// reports the outcome as events; the runtime (package worker) does the
// rest.
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/backoff"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/tools"
	"github.com/millrace/millrace/internal/worker"
)

// reportBackoff paces attempts to report a result while the server is
// unreachable.
var reportBackoff = backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// batchedResultLimit is the largest result a report may carry and still go
// out in a batch; bigger ones go alone, so a batch stays far below the
// server's body limit (MILLRACE_MAX_BODY_BYTES, 8 MiB by default).
const batchedResultLimit = 16 << 10

// kind is the commands stream.
type kind struct {
	cfg  config.Worker
	bcfg bus.Config
	log  *slog.Logger
	api  *client.Client
	id   string
	// tracer makes the tool spans (nil: tracing off).
	tracer trace.Tracer

	// Claims and final reports go out in batches (batch.go).
	claims  *batcher[api.ClaimItem, api.Claimed]
	reports *batcher[api.Report, api.Ack]
}

// New returns a runtime running commands; it connects to NATS and makes
// sure the stream and consumer exist.
func New(ctx context.Context, cfg config.Worker, log *slog.Logger) (*worker.Runtime, error) {
	cfg.WorkerID = worker.DefaultID(cfg.WorkerID)
	if cfg.MaxResultBytes <= 0 {
		cfg.MaxResultBytes = config.DefaultMaxResultBytes
	}
	if cfg.AckOn == "" {
		cfg.AckOn = config.DefaultWorkerAck
	}
	if err := config.CheckWorkerAck(cfg.AckOn); err != nil {
		return nil, err
	}
	// With ack on claim the server's reaper re-notifies a command whose
	// lease expired, so a notification need not outlive its claim.
	ackOnClaim := cfg.AckOn == config.AckOnClaim
	bcfg := cfg.NATS.Bus("millrace-worker " + cfg.WorkerID)
	// A pool worker takes only the steps routed to its pool, from the
	// pool's own durable (bus/pool.go); the default pool takes the rest.
	if cfg.Pool != "" {
		bcfg.Pool = cfg.Pool
	}
	if cfg.Concurrency > bcfg.MaxAckPending && !ackOnClaim {
		// The seeds' own defaults (100 and 64) trigger this, so it is
		// information, not a warning. Acked on claim, a running command
		// no longer counts against max_ack_pending.
		log.Info("concurrency exceeds the consumer's max_ack_pending, which caps unacknowledged notifications for the whole pool; raise NOETL_WORKER_NATS_MAX_ACK_PENDING to use every slot",
			"concurrency", cfg.Concurrency, "max_ack_pending", bcfg.MaxAckPending)
	}
	traces, err := telemetry.Setup(ctx, cfg.Telemetry, cfg.WorkerID, log)
	if err != nil {
		return nil, err
	}
	k := &kind{cfg: cfg, bcfg: bcfg, log: log, id: cfg.WorkerID, tracer: traces.Tracer("github.com/millrace/millrace/internal/worker/commands"),
		api: client.New(cfg.ServerURL).WithToken(cfg.Token).WithTracer(traces.Tracer("github.com/millrace/millrace/internal/client"))}
	k.claims = newBatcher("claim", DefaultBatchSenders, DefaultMaxBatch, k.sendClaims)
	k.reports = newBatcher("report", DefaultBatchSenders, DefaultMaxBatch, k.sendReports)
	rt, err := worker.New(ctx, worker.Config{ID: cfg.WorkerID, Concurrency: cfg.Concurrency, ShutdownGrace: cfg.ShutdownGrace, Pool: cfg.Pool, NATS: bcfg, Traces: traces, AckOnClaim: ackOnClaim}, k, log)
	if err != nil {
		k.Close()
		_ = traces.Shutdown(ctx)
		return nil, err
	}
	return rt, nil
}

func (k *kind) Name() string { return "commands" }

func (k *kind) Lanes(int) []worker.Lane {
	return []worker.Lane{{Stream: k.bcfg.Stream, Consumer: k.bcfg.PoolDurable()}}
}

func (k *kind) Ensure(ctx context.Context, conn *bus.Conn) error {
	_, err := conn.EnsureConsumer(ctx) // ensures the stream too
	return err
}

func (k *kind) Decode(data []byte) (worker.Job, error) {
	n, err := bus.DecodeNotification(data)
	if err != nil {
		return nil, err
	}
	return &job{k: k, n: n}, nil
}

func (k *kind) Close() {
	k.claims.close()
	k.reports.close()
	// Idle keep-alive connections would hold the server's graceful
	// shutdown for its full timeout (net/http counts new ones as active).
	k.api.HTTP.CloseIdleConnections()
}

// sendClaims claims and starts a batch of commands. A server without the
// batch route (404 not_found: an older version) gets single claims.
func (k *kind) sendClaims(ctx context.Context, items []api.ClaimItem) ([]api.Claimed, []error, error) {
	out, errs, err := k.api.ClaimBatch(ctx, k.id, true, items)
	if !routeMissing(err) {
		return out, errs, err
	}
	out, errs = make([]api.Claimed, len(items)), make([]error, len(items))
	for i, it := range items {
		out[i], errs[i] = k.api.ClaimAndStart(ctx, it.EventID, k.id, it.ExecutionID)
	}
	return out, errs, nil
}

// sendReports posts a batch of final reports; a server without the batch
// route, or one that refuses the batch's size (413), gets them one by one.
func (k *kind) sendReports(ctx context.Context, reps []api.Report) ([]api.Ack, []error, error) {
	out, errs, err := k.api.ReportBatch(ctx, reps)
	if !routeMissing(err) && client.StatusOf(err) != http.StatusRequestEntityTooLarge {
		return out, errs, err
	}
	out, errs = make([]api.Ack, len(reps)), make([]error, len(reps))
	for i, r := range reps {
		out[i], errs[i] = k.api.Report(ctx, r)
	}
	return out, errs, nil
}

func routeMissing(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == "not_found"
}

// job is one command notification.
type job struct {
	k   *kind
	n   bus.Notification
	cl  api.Claimed
	res any            // the tool's result, for Report
	set map[string]any // the context a task list published, for Report
}

func (j *job) Attr() slog.Attr { return slog.String("command_id", j.n.CommandID) }

// Step names the job's span ("worker commands <step>").
func (j *job) Step() string { return j.n.Step }

func (j *job) Claim(ctx context.Context) error {
	cl, err := j.k.claims.do(ctx, api.ClaimItem{EventID: j.n.EventID, ExecutionID: j.n.ExecutionID})
	switch st := client.StatusOf(err); {
	case err == nil:
		j.cl = cl
		return nil
	case st == http.StatusConflict:
		return fmt.Errorf("%w: %w", worker.ErrGone, err)
	case st == http.StatusNotFound || st == http.StatusBadRequest:
		return fmt.Errorf("%w: %w", worker.ErrUnknown, err)
	default:
		return err
	}
}

func (j *job) Lease() time.Duration { return time.Duration(j.cl.LeaseTTLMillis) * time.Millisecond }

func (j *job) Heartbeat(ctx context.Context) error {
	_, err := j.k.api.Report(ctx, j.report(api.EvCommandHeartbeat))
	return lostOn409(err)
}

func (j *job) Run(ctx context.Context) error {
	ctx, span := telemetry.Start(ctx, j.k.tracer, "tool "+toolKind(j.k.tracer, j.cl.Tool))
	defer span.End()
	var err error
	began := time.Now()
	j.res, j.set, err = Execute(WithBudgets(ctx, j.k.cfg.Budgets), j.cl.Command, &apiEnv{api: j.k.api, parent: j.cl.ExecutionID, command: j.cl.EventID, attempt: j.cl.Attempt})
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	if ctx.Err() == nil {
		observeStep(j.cl.Command, time.Since(began), err)
	}
	return err
}

// toolKind is the tool config's kind for the tool span's name ("tasks" for
// a task list, which has none); it reads nothing with tracing off.
func toolKind(tr trace.Tracer, tool json.RawMessage) string {
	if tr == nil {
		return ""
	}
	var t struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(tool, &t) != nil || t.Kind == "" {
		return "tasks"
	}
	return t.Kind
}

func (j *job) Release(ctx context.Context) error {
	return j.k.api.Release(ctx, j.cl.EventID, j.k.id, j.cl.Attempt)
}

func (j *job) report(eventType string) api.Report {
	return api.Report{EventType: eventType, EventID: j.cl.EventID, ExecutionID: j.cl.ExecutionID, WorkerID: j.k.id, Attempt: j.cl.Attempt}
}

// Report posts command.completed or command.failed. A result the server
// would refuse forever (too large, not JSON) fails the command rather than
// have it re-run to the same refusal.
func (j *job) Report(ctx context.Context, runErr error) (string, error) {
	rep, res := j.report(api.EvCommandCompleted), j.res
	rep.Context = j.set
	if runErr == nil && len(j.set) > 0 {
		// The context travels in the same report: it shares the result's
		// bound rather than have the server refuse the whole report.
		if b, err := json.Marshal(j.set); err != nil || len(b) > j.k.cfg.MaxResultBytes {
			msg := fmt.Sprintf("the context the task list assigned is %d bytes, over the limit of %d (MILLRACE_MAX_RESULT_BYTES); keep large data in a table or file and put its name in ctx", len(b), j.k.cfg.MaxResultBytes)
			if err != nil {
				msg = "the context the task list assigned is not JSON-encodable: " + err.Error()
			}
			runErr = &tools.Error{Kind: "worker", Message: msg}
		}
	}
	if runErr != nil {
		rep.Context = nil // a failed step assigns nothing
		rep.EventType = api.EvCommandFailed
		te := &tools.Error{}
		if !errors.As(runErr, &te) {
			te = &tools.Error{Kind: "worker", Message: runErr.Error()}
		}
		rep.Error = &api.ToolError{Kind: te.Kind, Message: te.Message, Retryable: te.Retryable}
		if te.Result != nil {
			res = te.Result
		}
	}
	if res != nil {
		b, err := json.Marshal(res)
		switch {
		case err != nil:
			rep.EventType = api.EvCommandFailed
			rep.Error = &api.ToolError{Kind: "worker", Message: "tool result is not JSON-encodable: " + err.Error()}
		case len(b) > j.k.cfg.MaxResultBytes:
			rep.EventType, rep.Result = api.EvCommandFailed, nil
			rep.Error = &api.ToolError{Kind: "worker", Message: fmt.Sprintf(
				"the result is %d bytes, over the limit of %d (MILLRACE_MAX_RESULT_BYTES); return less data or write it to a file or table", len(b), j.k.cfg.MaxResultBytes)}
		default:
			rep.Result = b
		}
	}
	err := j.send(ctx, rep)
	if err != nil && !client.Temporary(err) && client.StatusOf(err) != http.StatusConflict {
		// The server refuses this report (too large, malformed) and will
		// refuse it again: record the failure instead of re-running.
		j.k.log.Error("the server refused the result; reporting the command as failed", "command_id", j.n.CommandID, "err", err)
		rep.EventType, rep.Result, rep.Context = api.EvCommandFailed, nil, nil // a failure assigns nothing
		rep.Error = &api.ToolError{Kind: "worker", Message: "the server refused the result: " + err.Error()}
		err = j.send(ctx, rep)
	}
	if err != nil {
		return "", lostOn409(err)
	}
	if rep.EventType == api.EvCommandFailed {
		return "failed", nil
	}
	return "completed", nil
}

// send posts the final event, retrying while the server is unreachable or
// failing, until it answers or ctx ends.
func (j *job) send(ctx context.Context, rep api.Report) error {
	bo := reportBackoff
	for {
		var err error
		if len(rep.Result) <= batchedResultLimit {
			_, err = j.k.reports.do(ctx, rep)
		} else {
			rctx, cancel := context.WithTimeout(ctx, batchRequestTimeout)
			_, err = j.k.api.Report(rctx, rep)
			cancel()
		}
		if err == nil || !client.Temporary(err) { // a 429 or 503 is retried, never a failed command
			return err
		}
		d := bo.Next()
		j.k.log.Warn("reporting the result failed; retrying", "command_id", j.n.CommandID, "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return err
		}
	}
}

// lostOn409 marks a 409 (cancelled, re-claimed or ended) as a lost claim.
func lostOn409(err error) error {
	if client.StatusOf(err) == http.StatusConflict {
		return fmt.Errorf("%w: %w", worker.ErrLost, err)
	}
	return err
}
