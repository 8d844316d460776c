// Package queries is the worker kind that runs warehouse queries. It pulls
// jobs from the query stream (WAREHOUSE_QUERY_JOBS) through two lanes,
// interactive and background, claims each query through the API, runs it
// in the warehouse and streams its rows to the server; the runtime
// (package worker) does the rest. The server side of queries is package
// query.
package queries

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/warehouse"
	"github.com/millrace/millrace/internal/worker"
	"github.com/millrace/millrace/internal/worker/results"
)

// lease paces the heartbeat (a third of it): a cancelled query is noticed,
// and stopped in the warehouse, within two seconds.
const lease = 6 * time.Second

// Config configures a warehouse worker.
type Config struct {
	NATS          bus.Config // URL and credentials; Stream/Subject/Consumer below
	Stream        string
	Subject       string
	Consumer      string
	ServerURL     string
	Token         string // API token of role worker (MILLRACE_WORKER_TOKEN)
	WorkerID      string
	Concurrency   int
	ShutdownGrace time.Duration
	Telemetry     config.Telemetry // OTEL_*: job and client spans; off without an endpoint
}

// kind is the warehouse query stream.
type kind struct {
	cfg Config
	api *client.Client
}

// New returns a runtime running warehouse queries; it connects to NATS and
// makes sure the stream and lane consumers exist.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*worker.Runtime, error) {
	cfg.WorkerID = worker.DefaultID(cfg.WorkerID)
	traces, err := telemetry.Setup(ctx, cfg.Telemetry, cfg.WorkerID, log)
	if err != nil {
		return nil, err
	}
	k := &kind{cfg: cfg, api: client.New(cfg.ServerURL).WithToken(cfg.Token).WithTracer(traces.Tracer("github.com/millrace/millrace/internal/client"))}
	rt, err := worker.New(ctx, worker.Config{ID: cfg.WorkerID, Concurrency: cfg.Concurrency, ShutdownGrace: cfg.ShutdownGrace, NATS: cfg.NATS, Traces: traces}, k, log)
	if err != nil {
		_ = traces.Shutdown(ctx)
		return nil, err
	}
	return rt, nil
}

func (k *kind) Name() string { return "warehouse" }

// Lanes: interactive first; the background lane leaves slots free for it,
// so interactive work never waits behind a background backlog.
func (k *kind) Lanes(concurrency int) []worker.Lane {
	reserve := min(bus.QueryInteractiveReserve(concurrency), concurrency-1)
	return []worker.Lane{
		{Stream: k.cfg.Stream, Consumer: k.cfg.Consumer + bus.QueryInteractiveSuffix},
		{Stream: k.cfg.Stream, Consumer: k.cfg.Consumer, Reserve: reserve},
	}
}

func (k *kind) Ensure(ctx context.Context, conn *bus.Conn) error {
	return conn.EnsureQueryStream(ctx, k.cfg.Stream, k.cfg.Subject, k.cfg.Consumer, max(k.cfg.Concurrency*4, 256))
}

func (k *kind) Decode(data []byte) (worker.Job, error) {
	j, err := bus.DecodeQueryJob(data)
	if err != nil {
		return nil, err
	}
	return &job{k: k, uuid: j.Payload.QueryUUID}, nil
}

func (k *kind) Close() { k.api.HTTP.CloseIdleConnections() }

// job is one query.
type job struct {
	k    *kind
	uuid string
	cl   api.ClaimedQuery
}

func (j *job) Attr() slog.Attr { return slog.String("query", j.uuid) }

func (j *job) Claim(ctx context.Context) error {
	cl, err := j.k.api.QueryClaim(ctx, j.uuid, j.k.cfg.WorkerID)
	switch client.StatusOf(err) {
	case 0:
		j.cl = cl
		return err
	case http.StatusConflict: // cancelled, expired, taken or done
		return fmt.Errorf("%w: %w", worker.ErrGone, err)
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", worker.ErrUnknown, err)
	default:
		return err
	}
}

func (j *job) Lease() time.Duration { return lease }

// Heartbeat keeps the query ours; a 409 means it was cancelled (or
// re-queued after we went silent), and the runtime then cancels Run, which
// stops the query in the warehouse.
func (j *job) Heartbeat(ctx context.Context) error {
	err := j.k.api.QueryHeartbeat(ctx, j.uuid, j.k.cfg.WorkerID)
	if client.StatusOf(err) == http.StatusConflict {
		return fmt.Errorf("%w: %w", worker.ErrLost, err)
	}
	return err
}

// Run runs the query and streams its rows to the server.
func (j *job) Run(ctx context.Context) error {
	drv, err := warehouse.Open(ctx, warehouse.Conn{Type: j.cl.Warehouse.Type, URL: j.cl.Warehouse.URL})
	if err != nil {
		return err
	}
	defer drv.Close()
	return results.Upload(ctx, j.k.api, j.cl.QueryUUID, j.k.cfg.WorkerID, func(ctx context.Context, onColumns func([]warehouse.Column) error, onRow func([]any) error) error {
		return drv.Query(ctx, j.cl.SQL, onColumns, onRow)
	})
}

// Report records a failure; a finished query reported itself by its upload.
func (j *job) Report(ctx context.Context, runErr error) (string, error) {
	if runErr == nil {
		return "completed", nil
	}
	err := j.k.api.QueryFail(ctx, j.uuid, j.k.cfg.WorkerID, runErr.Error())
	if client.StatusOf(err) == http.StatusConflict {
		return "", fmt.Errorf("%w: %w", worker.ErrLost, err)
	}
	return "failed", err
}

// Release is a no-op: the server re-queues a query whose worker stopped
// heartbeating (MILLRACE_QUERY_STALE_WORKER_SECONDS), and the runtime
// naks the job for whoever is free then.
func (j *job) Release(context.Context) error { return nil }

// FromConfig is the warehouse worker's configuration from its settings.
func FromConfig(cfg config.Worker) Config {
	return Config{NATS: cfg.NATS.Bus("millrace-warehouse-worker"), Stream: cfg.Query.Stream, Subject: cfg.Query.Subject,
		Consumer: cfg.Query.Consumer, ServerURL: cfg.ServerURL, Token: cfg.Token, WorkerID: cfg.WorkerID,
		Concurrency: cfg.Concurrency, ShutdownGrace: cfg.ShutdownGrace, Telemetry: cfg.Telemetry}
}
