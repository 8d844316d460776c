// Package preaggs is the pre-aggregate worker kind (`millrace worker
// --stream pre-aggregate`). It pulls two lanes of PRE_AGGREGATE_QUERY_JOBS:
// metric queries to serve from a materialization (consumer
// worker-pre-aggregate) and materializations to build (consumer
// worker-pre-aggregate-materialization, at most
// PRE_AGGREGATE_BUILD_CONCURRENCY at once, so builds never take every slot
// from dashboard queries). A query is claimed through the warehouse
// query protocol, answered by package engine from DuckDB over the build's
// Parquet and streamed to the server like a warehouse result; a build is
// claimed, run by engine.Build (warehouse rows to Parquet objects in the
// object store) and reported. The runtime (package worker) does the rest.
package preaggs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/backoff"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/warehouse"
	"github.com/millrace/millrace/internal/worker"
	"github.com/millrace/millrace/internal/worker/results"
)

const (
	// queryLease paces a served query's heartbeat (a third of it), as the
	// warehouse worker's: a cancel is noticed within two seconds.
	queryLease = 6 * time.Second
	// buildLease paces a build's heartbeat (every 2 s); the server
	// re-queues a build silent for MILLRACE_QUERY_STALE_WORKER_SECONDS
	// (30 s by default).
	buildLease = 6 * time.Second
	// reportAttempts bounds the retries of a build's report or a query's
	// fallback when the server is unreachable or answers 5xx.
	reportAttempts = 5
)

// Config configures a pre-aggregate worker.
type Config struct {
	NATS                                         bus.Config // URL and credentials
	Stream, QuerySubject, BuildSubject, Consumer string
	// Storage is the JetStream storage (memory | file) of the object store
	// bucket when Millrace creates it (NATS_STORAGE; the stream takes
	// NATS.Storage, the same setting).
	Storage string
	// ObjectStorage is where materializations are (PRE_AGGREGATE_STORAGE):
	// "" or nats for the Bucket, dir for Dir (shared with the server).
	ObjectStorage    string
	Dir, Bucket      string
	Engine           engine.Config
	BuildConcurrency int
	ServerURL        string
	Token            string // API token of role worker (MILLRACE_WORKER_TOKEN)
	WorkerID         string
	Concurrency      int
	ShutdownGrace    time.Duration
	Telemetry        config.Telemetry // OTEL_*: job and client spans; off without an endpoint
}

// Engine is what the kind needs of package engine.
type Engine interface {
	Build(ctx context.Context, b api.ClaimedBuild) (api.BuildComplete, error)
	Serve(ctx context.Context, plan api.ServePlan, onColumns func([]warehouse.Column) error, onRow func([]any) error) error
	Close() error
}

// kind is the pre-aggregate stream.
type kind struct {
	cfg       Config
	api       *client.Client
	log       *slog.Logger
	newEngine func(storage.Store) (Engine, error)

	mu  sync.Mutex
	eng Engine // opened by the first Ensure, over the object store
}

// New returns a runtime serving and building pre-aggregates; it connects
// to NATS, makes sure the stream, its two consumers and the object store
// bucket exist, and opens the engine.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*worker.Runtime, error) {
	return newRuntime(ctx, cfg, log, func(st storage.Store) (Engine, error) { return engine.New(cfg.Engine, st) })
}

func newRuntime(ctx context.Context, cfg Config, log *slog.Logger, newEngine func(storage.Store) (Engine, error)) (*worker.Runtime, error) {
	cfg.WorkerID = worker.DefaultID(cfg.WorkerID)
	if cfg.BuildConcurrency < 1 {
		return nil, fmt.Errorf("PRE_AGGREGATE_BUILD_CONCURRENCY must be >= 1, got %d", cfg.BuildConcurrency)
	}
	switch cfg.ObjectStorage {
	case "", "nats", "dir":
	default:
		return nil, fmt.Errorf("PRE_AGGREGATE_STORAGE must be nats or dir, got %q", cfg.ObjectStorage)
	}
	traces, err := telemetry.Setup(ctx, cfg.Telemetry, cfg.WorkerID, log)
	if err != nil {
		return nil, err
	}
	k := &kind{cfg: cfg, api: client.New(cfg.ServerURL).WithToken(cfg.Token).WithTracer(traces.Tracer("github.com/millrace/millrace/internal/client")),
		log: log, newEngine: newEngine}
	rt, err := worker.New(ctx, worker.Config{ID: cfg.WorkerID, Concurrency: cfg.Concurrency, ShutdownGrace: cfg.ShutdownGrace, NATS: cfg.NATS, Traces: traces}, k, log)
	if err != nil {
		k.Close()
		_ = traces.Shutdown(ctx)
		return nil, err
	}
	return rt, nil
}

func (k *kind) Name() string { return "pre-aggregate" }

// Lanes: queries may use every slot; builds at most BuildConcurrency, and
// never the last slot, so a query always finds one.
func (k *kind) Lanes(concurrency int) []worker.Lane {
	builds := k.cfg.BuildConcurrency
	if concurrency > 1 {
		builds = min(builds, concurrency-1)
	}
	return []worker.Lane{
		{Stream: k.cfg.Stream, Consumer: k.cfg.Consumer},
		{Stream: k.cfg.Stream, Consumer: k.cfg.Consumer + bus.PreAggBuildConsumerSuffix, Max: builds},
	}
}

// Ensure makes the stream and its consumers, and the first time the
// object store (the bucket, with nats storage) and the engine over it.
func (k *kind) Ensure(ctx context.Context, conn *bus.Conn) error {
	if err := conn.EnsurePreAggStream(ctx, k.cfg.Stream, k.cfg.QuerySubject, k.cfg.BuildSubject, k.cfg.Consumer,
		max(k.cfg.Concurrency*4, 256)); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.eng != nil {
		return nil // a lost bucket is made again by the store itself
	}
	var st storage.Store
	var err error
	if k.cfg.ObjectStorage == "dir" {
		st, err = storage.OpenDir(k.cfg.Dir)
	} else {
		st, err = storage.OpenObjects(ctx, conn.JS, k.cfg.Bucket, bus.StorageType(k.cfg.Storage), conn.ObjectStoreReplicas(ctx, k.cfg.Bucket))
	}
	if err != nil {
		return fmt.Errorf("pre-aggregate storage: %w", err)
	}
	eng, err := k.newEngine(st)
	if err != nil {
		return fmt.Errorf("pre-aggregate engine: %w", err)
	}
	k.eng = eng
	k.log.Info("pre-aggregate storage", "store", st.String(), "build_concurrency", k.cfg.BuildConcurrency)
	return nil
}

func (k *kind) engine() Engine {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.eng
}

// Decode tells a query job ({jobId, payload: {queryUuid}}) from a build
// job ({jobId, payload: {materializationUuid}}).
func (k *kind) Decode(data []byte) (worker.Job, error) {
	q, qerr := bus.DecodeQueryJob(data)
	if qerr == nil {
		return &serveJob{k: k, uuid: q.Payload.QueryUUID}, nil
	}
	b, berr := bus.DecodePreAggBuildJob(data)
	if berr == nil {
		return &buildJob{k: k, uuid: b.Payload.MaterializationUUID}, nil
	}
	return nil, fmt.Errorf("neither a query job (%v) nor a materialization job (%v)", qerr, berr)
}

func (k *kind) Close() {
	k.api.HTTP.CloseIdleConnections()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.eng != nil {
		if err := k.eng.Close(); err != nil {
			k.log.Warn("closing the pre-aggregate engine", "err", err)
		}
		k.eng = nil
	}
}

// claimErr maps a claim's refusal to what the runtime does with the
// message.
func claimErr(err error) error {
	switch client.StatusOf(err) {
	case 0:
		return err
	case http.StatusConflict: // cancelled, expired, taken, done or superseded
		return fmt.Errorf("%w: %w", worker.ErrGone, err)
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", worker.ErrUnknown, err)
	default:
		return err
	}
}

// lostErr maps a heartbeat's or report's 409 to ErrLost.
func lostErr(err error) error {
	if client.StatusOf(err) == http.StatusConflict {
		return fmt.Errorf("%w: %w", worker.ErrLost, err)
	}
	return err
}

// retry calls fn until it succeeds, the server refuses it (4xx), ctx ends
// or reportAttempts ran out: a finished build's report must not be lost to
// a server restarting.
func retry(ctx context.Context, fn func(context.Context) error) error {
	bo := backoff.Backoff{Min: 200 * time.Millisecond, Max: 3 * time.Second}
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || !client.Temporary(err) || attempt == reportAttempts {
			return err
		}
		if !backoff.Sleep(ctx, bo.Next()) {
			return err
		}
	}
}

// serveJob is a metric query to answer from a pre-aggregate.
type serveJob struct {
	k        *kind
	uuid     string
	cl       api.ClaimedQuery
	fellBack bool
}

func (j *serveJob) Attr() slog.Attr { return slog.String("query", j.uuid) }

func (j *serveJob) Claim(ctx context.Context) error {
	cl, err := j.k.api.QueryClaim(ctx, j.uuid, j.k.cfg.WorkerID)
	if err != nil {
		return claimErr(err)
	}
	j.cl = cl
	return nil
}

func (j *serveJob) Lease() time.Duration { return queryLease }

// Heartbeat keeps the query ours; a 409 (cancelled, re-queued) stops Run,
// which interrupts DuckDB.
func (j *serveJob) Heartbeat(ctx context.Context) error {
	return lostErr(j.k.api.QueryHeartbeat(ctx, j.uuid, j.k.cfg.WorkerID))
}

// Run answers the query from its build and streams the rows. A missing
// object is a miss, not an error: the server is told to run the query on
// the warehouse instead (and rebuilds the pre-aggregate).
func (j *serveJob) Run(ctx context.Context) error {
	plan := j.cl.PreAggregate
	if plan == nil {
		// The server sent a warehouse query here (its target changed
		// after it was published): run it where it now belongs.
		return j.runWarehouse(ctx)
	}
	eng := j.k.engine()
	err := results.Upload(ctx, j.k.api, j.uuid, j.k.cfg.WorkerID, func(ctx context.Context, onColumns func([]warehouse.Column) error, onRow func([]any) error) error {
		return eng.Serve(ctx, *plan, onColumns, onRow)
	})
	if !errors.Is(err, engine.ErrObjectMissing) {
		return err
	}
	j.k.log.Warn("a materialization object is missing; the query falls back to the warehouse and the pre-aggregate is rebuilt",
		"query", j.uuid, "build", plan.BuildUUID, "err", err)
	ferr := retry(ctx, func(ctx context.Context) error {
		return j.k.api.QueryFallback(ctx, j.uuid, j.k.cfg.WorkerID, api.QueryFallback{Code: api.PreAggMissObjectLost,
			Message: fmt.Sprintf("build %s's Parquet is missing (%v); the query ran on the warehouse and a rebuild was started", plan.BuildUUID, err)})
	})
	if ferr != nil {
		return fmt.Errorf("%w; and the fallback to the warehouse failed: %w", err, ferr)
	}
	j.fellBack = true
	return nil
}

func (j *serveJob) runWarehouse(ctx context.Context) error {
	drv, err := warehouse.Open(ctx, warehouse.Conn{Type: j.cl.Warehouse.Type, URL: j.cl.Warehouse.URL})
	if err != nil {
		return err
	}
	defer drv.Close()
	return results.Upload(ctx, j.k.api, j.uuid, j.k.cfg.WorkerID, func(ctx context.Context, onColumns func([]warehouse.Column) error, onRow func([]any) error) error {
		return drv.Query(ctx, j.cl.SQL, onColumns, onRow)
	})
}

// Report records a failure; a served query reported itself by its upload,
// a fallen-back one by the fallback.
func (j *serveJob) Report(ctx context.Context, runErr error) (string, error) {
	if runErr == nil {
		if j.fellBack {
			return "fallback", nil
		}
		return "completed", nil
	}
	if err := lostErr(j.k.api.QueryFail(ctx, j.uuid, j.k.cfg.WorkerID, runErr.Error())); err != nil {
		return "", err
	}
	return "failed", nil
}

// Release is a no-op: the server re-queues a query whose worker stopped
// heartbeating, and the runtime naks the message for whoever is free.
func (j *serveJob) Release(context.Context) error { return nil }

// buildJob is a materialization to build.
type buildJob struct {
	k    *kind
	uuid string
	cl   api.ClaimedBuild
	done api.BuildComplete
}

func (j *buildJob) Attr() slog.Attr { return slog.String("build", j.uuid) }

func (j *buildJob) Claim(ctx context.Context) error {
	cl, err := j.k.api.BuildClaim(ctx, j.uuid, j.k.cfg.WorkerID)
	if err != nil {
		return claimErr(err)
	}
	j.cl = cl
	return nil
}

func (j *buildJob) Lease() time.Duration { return buildLease }

// Heartbeat keeps the build ours; a 409 means the server gave it to
// another worker (we were silent too long) or superseded it.
func (j *buildJob) Heartbeat(ctx context.Context) error {
	return lostErr(j.k.api.BuildHeartbeat(ctx, j.uuid, j.k.cfg.WorkerID))
}

// Run materializes the build: warehouse rows to Parquet objects.
func (j *buildJob) Run(ctx context.Context) error {
	start := time.Now()
	done, err := j.k.engine().Build(ctx, j.cl)
	if err != nil {
		return err
	}
	j.done = done
	var rows int64
	for _, p := range done.Partitions {
		rows += p.Rows
	}
	j.k.log.Info("pre-aggregate built", "build", j.uuid, "model", j.cl.Model, "pre_aggregate", j.cl.PreAggregate,
		"partitions", len(done.Partitions), "rows", rows, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Report completes or fails the build; the server promotes a complete one
// (or records why not: an empty build never replaces one with rows).
func (j *buildJob) Report(ctx context.Context, runErr error) (string, error) {
	var err error
	outcome := "completed"
	if runErr == nil {
		err = retry(ctx, func(ctx context.Context) error { return j.k.api.BuildComplete(ctx, j.uuid, j.k.cfg.WorkerID, j.done) })
	} else {
		outcome = "failed"
		err = retry(ctx, func(ctx context.Context) error {
			return j.k.api.BuildFail(ctx, j.uuid, j.k.cfg.WorkerID, runErr.Error())
		})
	}
	if err != nil {
		return "", lostErr(err)
	}
	return outcome, nil
}

// Release is a no-op: the server re-queues a build whose worker stopped
// heartbeating; the active build keeps serving meanwhile.
func (j *buildJob) Release(context.Context) error { return nil }

// FromConfig is the pre-aggregate worker's configuration from its settings.
func FromConfig(cfg config.Worker) Config {
	p := cfg.PreAgg
	return Config{NATS: cfg.NATS.Bus("millrace-pre-aggregate-worker"), Stream: p.Stream, QuerySubject: p.QuerySubject,
		BuildSubject: p.BuildSubject, Consumer: p.Consumer, Storage: cfg.NATS.Storage, ObjectStorage: p.Storage, Dir: p.Dir,
		Bucket: p.Bucket, Engine: engine.Config{MemoryLimit: p.MemoryLimit, Threads: p.Threads, CacheDir: p.CacheDir,
			CacheMaxBytes: int64(p.CacheMaxBytes)}, BuildConcurrency: p.BuildConcurrency, ServerURL: cfg.ServerURL, Token: cfg.Token,
		WorkerID: cfg.WorkerID, Concurrency: cfg.Concurrency, ShutdownGrace: cfg.ShutdownGrace, Telemetry: cfg.Telemetry}
}
