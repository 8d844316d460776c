package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/builds"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/lifecycle"
	"github.com/millrace/millrace/internal/monitor"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/query"
	"github.com/millrace/millrace/internal/relay"
	"github.com/millrace/millrace/internal/results"
	"github.com/millrace/millrace/internal/retention"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/tools"
	"github.com/millrace/millrace/internal/ui"
	"github.com/millrace/millrace/internal/wire"
)

// OpenDriver opens the event store named by a DATABASE_URL and applies
// pending migrations.
func OpenDriver(ctx context.Context, url string) (store.Driver, error) {
	drv, err := Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := drv.Migrate(ctx); err != nil {
		drv.Close()
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	return drv, nil
}

// Connect opens the event store named by a DATABASE_URL as it is, without
// migrating it.
func Connect(ctx context.Context, url string) (store.Driver, error) {
	var drv store.Driver
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		d, err := pgdriver.Open(ctx, url, pgdriver.Options{})
		if err != nil {
			return nil, err
		}
		drv = d
	case strings.HasPrefix(url, "sqlite:"):
		path, ok := sqlitedriver.ParseURL(url)
		if !ok {
			return nil, fmt.Errorf("DATABASE_URL %q: want sqlite:PATH, or sqlite::memory: for a database in memory", url)
		}
		d, err := sqlitedriver.Open(ctx, path)
		if err != nil {
			return nil, err
		}
		drv = d
	default:
		return nil, fmt.Errorf("DATABASE_URL %q is not supported: use postgres://user@host:5432/db or sqlite:PATH", config.RedactURL(url))
	}
	return drv, nil
}

// Server is a running API server with its relay.
type Server struct {
	// rendering is cancelled (stopRendering) as the server begins to stop:
	// it ends the template renderings in flight (see flow.Config.Stopping).
	rendering     context.Context
	stopRendering context.CancelFunc

	probe  storeProbe // health's store check (healthprobe.go)
	cfg    config.Server
	log    *slog.Logger
	drv    store.Driver
	st     *store.Store
	nats   *natsLink
	live   *liveLink // notes of committed events, to NATS and this server's streams
	flow   *flow.Service
	query  *query.Service
	builds *builds.Service // pre-aggregate builds: triggers, worker protocol, scheduler, reaper
	relay  *relay.Relay
	reaper *flow.Reaper
	// retain deletes finished executions after MILLRACE_RETENTION (it
	// does nothing when that is 0).
	retain *retention.Service
	mon    *monitor.Monitor // gauges, GET /api/ops and the streams the UI shows
	// bg owns every goroutine the server runs besides HTTP handlers and
	// in-process queries (which query.Service owns): Run stops it before
	// closing the store.
	bg    *lifecycle.Group
	authn *auth.Authenticator
	gen   *ids.Generator
	ln    net.Listener
	http  *http.Server
	url   string

	// connectLate is set when NATS was unreachable at startup: Run keeps
	// connecting in the background.
	connectLate bool
	api         *API

	// preAggStore holds materializations (PRE_AGGREGATE_STORAGE);
	// preAggEngine builds and serves them in this process
	// (NATS_ENABLED=false), else nil.
	preAggStore  *preAggStore
	preAggEngine *engine.Engine

	// traces exports this server's spans (OTEL_*); nil when tracing is off.
	traces *telemetry.Provider
}

// New opens the store, connects to NATS, checks the stream contract and
// binds the listener. Run serves.
func New(ctx context.Context, cfg config.Server, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log, bg: lifecycle.New(context.Background())}
	s.rendering, s.stopRendering = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	switch cfg.Auth.Mode {
	case config.AuthTokens:
	case config.AuthNone:
		log.Warn("authentication is off (MILLRACE_AUTH=none): anyone who can reach " + cfg.Addr + " can read every credential, run and cancel work and report as a worker; " +
			"use it only on a trusted network, and set MILLRACE_AUTH=tokens (the default) otherwise")
	default:
		return nil, fmt.Errorf("MILLRACE_AUTH=%q: want tokens (every route but health, metrics, login and the UI needs a token) or none (no authentication)", cfg.Auth.Mode)
	}
	// A malformed key fails startup; a missing one only disables credentials.
	var box *secret.Box
	var err error
	if s.traces, err = telemetry.Setup(ctx, cfg.Telemetry, "", log); err != nil {
		return nil, err
	}
	tracer := s.traces.Tracer("github.com/millrace/millrace/internal/server")
	if strings.TrimSpace(cfg.SecretKey) != "" {
		if box, err = secret.NewRing(cfg.SecretKey, cfg.SecretKeys); err != nil {
			return nil, err
		}
		log.Info("credential key loaded", "key_id", box.KeyID(), "older_keys", box.OlderKeys())
	} else if strings.TrimSpace(cfg.SecretKeys) != "" {
		return nil, fmt.Errorf("%s is set but %s is not: the older keys only open credentials, a sealing key is needed too; set %s to the new key (make one with `openssl rand -hex 32`)",
			secret.EnvOlderKeys, secret.EnvKey, secret.EnvKey)
	} else {
		log.Warn(secret.EnvKey + " is not set: the credential API is disabled; generate a key with `openssl rand -hex 32`")
	}
	if s.drv, err = openStore(ctx, cfg, log); err != nil {
		return nil, err
	}
	s.live = newLiveLink(s)
	s.st = store.New(s.drv, store.Options{AfterCommit: s.live.committed})
	s.nats = &natsLink{s: s}
	if err := cfg.NATS.Bus("millrace-server").Validate(); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, StartupNATSWait)
	conn, cerr := bus.ConnectRetry(wctx, cfg.NATS.Bus("millrace-server"), log)
	cancel()
	if cerr == nil {
		s.nats.attach(conn)
		if _, err = conn.EnsureStream(ctx); err != nil {
			return nil, err
		}
		// The server creates the consumer too, so notifications published
		// before the first worker starts are not skipped by deliver_policy=new.
		if err = s.ensureConsumer(ctx, conn); err != nil {
			return nil, err
		}
	} else if ctx.Err() != nil {
		return nil, ctx.Err()
	} else {
		s.connectLate = true
		log.Warn("NATS is not reachable; serving the API anyway (work waits in the outbox) and connecting in the background", "err", cerr)
	}
	nodeID := cfg.NodeID
	if alloc, ok := s.drv.(store.NodeAllocator); ok && nodeID < 0 {
		// Servers sharing a database get distinct id nodes from it.
		if nodeID, err = alloc.AllocateNode(ctx); err != nil {
			return nil, fmt.Errorf("allocate an id node: %w (or set MILLRACE_NODE_ID)", err)
		}
	}
	if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("listen on %s (MILLRACE_ADDR): %w", cfg.Addr, err)
	}
	s.url = cfg.PublicURL
	if s.url == "" {
		a := s.ln.Addr().(*net.TCPAddr)
		s.url = urlFor(a)
		if a.IP.IsUnspecified() {
			log.Warn("SERVER_API_URL is not set: notifications tell workers to use a loopback URL; set SERVER_API_URL to this server's address for workers on other machines", "server_url", s.url)
		}
	}
	// The relay comes first: the services that fill the outbox wake it.
	s.relay = relay.New(relay.Config{Tracer: tracer, Subject: cfg.NATS.Subject, ServerURL: s.url}, s.st, s.nats, log)
	gen := ids.New(nodeID)
	s.gen = gen
	if s.authn, err = auth.New(s.st, gen, cfg.Auth, log); err != nil {
		return nil, err
	}
	s.flow = flow.New(s.st, gen, flow.Config{LeaseTTL: cfg.LeaseTTL,
		CatalogCacheTTL: cfg.CatalogCacheTTL, OnRegister: s.nats.catalogRegistered,
		MaxChildDepth: cfg.Budgets.MaxChildDepth,
		Templates:     templateLimits(cfg.Budgets), MaxWorkloadBytes: cfg.Budgets.MaxWorkloadBytes, Stopping: s.rendering},
		tools.Kinds(), log, s.relay.Wake)
	s.nats.watchCatalog()
	s.reaper = s.flow.NewReaper(flow.ReaperConfig{Interval: cfg.ReapInterval, RedeliverAfter: cfg.RedeliverAfter, Backlog: s.backlog})
	res, err := results.Open(cfg.Query.ResultsDir)
	if err != nil {
		return nil, fmt.Errorf("results directory %s (MILLRACE_RESULTS_DIR): %w", cfg.Query.ResultsDir, err)
	}
	s.query = query.New(query.Config{NATSEnabled: cfg.Query.NATSEnabled, Concurrency: cfg.Query.Concurrency, QueueTimeout: cfg.Query.QueueTimeout, StaleWorkerAfter: cfg.Query.StaleWorker,
		CacheStale: cfg.Query.CacheStale, RedeliverAfter: cfg.RedeliverAfter, Subject: cfg.Query.Subject,
		PreAggEnabled: cfg.PreAgg.Enabled, PreAggSubject: cfg.PreAgg.QuerySubject},
		s.st, gen, box, res, log, s.relay.Wake)
	if n, err := s.query.RecoverInProcess(ctx, time.Now().UTC()); err != nil {
		return nil, fmt.Errorf("recover in-process queries: %w", err)
	} else if n > 0 {
		log.Warn("ended queries interrupted by the previous server run; clients are told to run them again", "count", n)
	}
	if cfg.Query.ProjectsFile != "" {
		n, err := s.query.LoadProjects(ctx, cfg.Query.ProjectsFile)
		if err != nil {
			return nil, err
		}
		log.Info("projects loaded", "file", cfg.Query.ProjectsFile, "count", n)
	}
	if c := s.nats.get(); c != nil && cfg.Query.NATSEnabled {
		if err := s.ensureQuery(ctx, c); err != nil {
			return nil, err
		}
	}
	kind, err := preAggStorageKind(cfg)
	if err != nil {
		return nil, err
	}
	s.preAggStore = &preAggStore{s: s, kind: kind}
	if s.preAggEngine, err = s.openPreAggEngine(ctx); err != nil {
		return nil, err
	}
	buildOpts := []builds.Option{builds.WithObjects(s.preAggStore.open)}
	if s.preAggEngine != nil {
		buildOpts = append(buildOpts, builds.WithBuilder(s.preAggEngine))
	}
	s.builds = builds.New(builds.Config{Enabled: cfg.PreAgg.Enabled, NATSEnabled: cfg.Query.NATSEnabled, Subject: cfg.PreAgg.BuildSubject,
		MaxRows: int64(cfg.PreAgg.MaxRows), BuildConcurrency: cfg.PreAgg.BuildConcurrency, RedeliverAfter: cfg.RedeliverAfter,
		StaleWorkerAfter: cfg.Query.StaleWorker, WorkerID: fmt.Sprintf("server-%d-%d", nodeID, os.Getpid())},
		s.st, gen, s.query, log, s.relay.Wake, buildOpts...)
	// A pre-aggregate query whose Parquet is gone falls back to the
	// warehouse and asks the builds service for a rebuild. With
	// NATS_ENABLED=false the engine serves hits in this process.
	var serve query.PreAggEngine // a nil *engine.Engine must stay a nil interface
	if s.preAggEngine != nil {
		serve = s.preAggEngine
	}
	s.query.SetPreAgg(serve, s.builds.OnObjectLost)
	if s.retain, err = retention.New(retention.Config{Period: cfg.Retention}, s.drv, log); err != nil {
		return nil, err
	}
	s.mon = s.newMonitor()
	api := NewAPI(s.flow, log, int64(cfg.MaxBodyBytes), s.healthCheck, WithSecretBox(box), WithQuery(s.query), WithBuilds(s.builds),
		WithAuth(s.authn, cfg.Auth.Mode == config.AuthNone), WithLive(s.live.options()),
		WithStreams(s.streamsInfo), WithOps(s.mon), WithUI(ui.Config{APIBase: "/api", OIDCIssuer: cfg.Auth.OIDCIssuer}), WithTracer(tracer),
		WithMaxInflightWrites(cfg.MaxInflightWrites),
		WithIdempotencyTTL(cfg.IdempotencyTTL))
	s.api = api
	s.http = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	s.http.RegisterOnShutdown(api.StopStreams) // clients resume with Last-Event-ID
	ok = true
	return s, nil
}

func urlFor(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(a.Port))
}

// URL is where workers reach this server.
func (s *Server) URL() string { return s.url }

// Store is the server's event store (tests and dev mode make tokens in it).
func (s *Server) Store() *store.Store { return s.st }

// IDs is the server's id generator.
func (s *Server) IDs() *ids.Generator { return s.gen }

// Routes lists the API's routes and who may use each.
func (s *Server) Routes() []Route { return s.api.Routes() }

// Handler is the HTTP API without the listener, for benchmarks that
// measure a route's own cost (httptest, no sockets).
func (s *Server) Handler() http.Handler { return s.api }

// Flow exposes the flow service (dev mode and benchmarks use it).
func (s *Server) Flow() *flow.Service { return s.flow }

// ensureConsumer creates the worker pool's consumer when it is missing but
// leaves an existing one alone: its NOETL_WORKER_NATS_* settings belong to
// the workers, and a server with defaults must not undo their tuning.
func (s *Server) ensureConsumer(ctx context.Context, c *bus.Conn) error {
	if _, err := c.JS.Consumer(ctx, s.cfg.NATS.Stream, s.cfg.NATS.Consumer); err == nil {
		return nil
	}
	_, err := c.EnsureConsumer(ctx)
	return err
}

func (s *Server) backlog(ctx context.Context) (int64, time.Time, error) {
	c := s.nats.get()
	if c == nil {
		return 0, time.Time{}, errNotConnected
	}
	return c.CommandBacklog(ctx)
}

// healthStoreTimeout bounds health's store check.
const healthStoreTimeout = time.Second

func (s *Server) healthCheck(ctx context.Context) api.Health {
	h := api.Health{Status: "ok", Store: "ok", NATS: "ok"}
	// A short bound of its own (healthprobe.go): a store that does not
	// answer in a second is down for a probe, whatever the request's
	// deadline; probes share one check at a time.
	if c := s.probe.get(ctx, func(ctx context.Context) (store.Stats, error) {
		return store.ReadValue(ctx, s.st, func(q store.Querier) (store.Stats, error) { return q.Stats(ctx) })
	}); c.err != nil {
		h.Status, h.Store = "degraded", "down: "+c.err.Error()
	} else {
		ws := wire.Stats(c.stats)
		h.Stats = &ws
	}
	c := s.nats.get()
	switch {
	case c == nil:
		// Work is still accepted: it waits in the outbox until NATS is up.
		h.Status, h.NATS = "degraded", "connecting: notifications wait in the outbox"
		return h
	case !c.NC.IsConnected():
		h.Status, h.NATS = "degraded", "disconnected: notifications wait in the outbox"
		return h
	}
	s.api.queryHealth(ctx, &h, s.queryPulling)
	if s.nats.getProblem() != "" {
		s.nats.ensure(ctx) // maybe fixed since (a worker or the publisher recreated it)
		if p := s.nats.getProblem(); p != "" {
			h.Status, h.NATS = "degraded", p
		}
	}
	return h
}

// Run serves until ctx ends, then shuts down gracefully. It returns only
// after every goroutine the server started has ended, and closes the store
// and NATS after that, never under them. The order matters:
//
//  1. HTTP stops taking requests and lets those in flight finish (they
//     write to the store and wake the relay);
//  2. in-process queries end and their outcome is recorded;
//  3. the relay, the reapers and the NATS link stop;
//  4. NATS and the store close.
func (s *Server) Run(ctx context.Context) error {
	bg := s.bg
	bg.Go("relay", func(ctx context.Context) error { s.relay.Run(ctx); return nil })
	bg.Go("live notes", func(ctx context.Context) error { s.live.pub.Run(ctx); return nil })
	bg.Go("token last-used", func(ctx context.Context) error { s.authn.Run(ctx); return nil })
	s.relay.Wake() // publish whatever a previous run left in the outbox
	bg.Go("command reaper", func(ctx context.Context) error { s.reaper.Run(ctx); return nil })
	bg.Go("query reaper", func(ctx context.Context) error {
		s.query.Reap(ctx, query.DefaultReapInterval, s.queryBacklog)
		return nil
	})
	bg.Go("pre-aggregate scheduler", func(ctx context.Context) error { s.builds.Schedule(ctx); return nil })
	bg.Go("build reaper", func(ctx context.Context) error { s.builds.Reap(ctx, s.buildBacklog); return nil })
	bg.Go("monitor", func(ctx context.Context) error { s.mon.Run(ctx); return nil })
	bg.Go("session purge", func(ctx context.Context) error { s.purgeSessions(ctx); return nil })
	bg.Go("idempotency purge", func(ctx context.Context) error { s.purgeIdempotencyKeys(ctx, s.cfg.IdempotencyTTL); return nil })
	bg.Go("retention", func(ctx context.Context) error { s.retain.Run(ctx); return nil })
	if s.connectLate {
		bg.Go("NATS connect", func(ctx context.Context) error { s.nats.connectLater(ctx); return nil })
	}
	bg.Go("HTTP", func(context.Context) error {
		if err := s.http.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	s.log.Info("millrace server ready", "addr", s.ln.Addr().String(), "url", s.url, "store", s.drv.Name(),
		"nats", bus.Redact(s.cfg.NATS.URL), "stream", s.cfg.NATS.Stream, "subject", s.cfg.NATS.Subject)
	select {
	case <-ctx.Done():
	case <-bg.Context().Done(): // a service failed
	}
	s.log.Info("millrace server stopping")
	s.stopRendering() // renderings in flight end now, not at their budget
	sctx, cancel := context.WithTimeout(context.Background(), httpShutdownGrace)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("HTTP requests still running at the end of the shutdown grace; closing them", "err", err)
		_ = s.http.Close()
	}
	s.query.Stop()
	s.builds.Stop()
	err := bg.Stop()
	s.close()
	s.log.Info("millrace server stopped")
	return err
}

// httpShutdownGrace is how long requests in flight may take to finish.
const httpShutdownGrace = 10 * time.Second

// Close releases what New opened (store, NATS, listener) for a server whose
// Run will not be called; Run closes them itself.
func (s *Server) Close() { s.close() }

func (s *Server) close() {
	if s.query != nil {
		s.query.Stop()
	}
	if s.builds != nil {
		s.builds.Stop()
	}
	if s.preAggEngine != nil {
		_ = s.preAggEngine.Close() // after the queries and builds that use it
	}
	_ = s.bg.Stop()
	if s.ln != nil {
		_ = s.ln.Close() // already closed if HTTP served
	}
	if s.st != nil {
		s.st.Close()
	} else if s.drv != nil {
		s.drv.Close()
	}
	if s.nats != nil {
		s.nats.close()
	}
	// Last: the spans of everything above are exported before exit.
	ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
	defer cancel()
	if err := s.traces.Shutdown(ctx); err != nil {
		s.log.Warn("some spans were not exported", "err", err)
	}
}

// newMonitor samples the streams this server uses: commands always, the
// query and pre-aggregate streams when their jobs go through NATS.
func (s *Server) newMonitor() *monitor.Monitor {
	streams := []monitor.Stream{{Name: s.cfg.NATS.Stream, Kind: bus.KindCommands, Consumer: s.cfg.NATS.Consumer}}
	if s.cfg.Query.NATSEnabled {
		streams = append(streams, monitor.Stream{Name: s.cfg.Query.Stream, Kind: bus.KindWarehouse},
			monitor.Stream{Name: s.cfg.PreAgg.Stream, Kind: bus.KindPreAggregate})
	}
	stats := func(ctx context.Context, now time.Time) (store.OpsStats, error) {
		return store.ReadValue(ctx, s.st, func(q store.Querier) (store.OpsStats, error) { return q.OpsStats(ctx, now) })
	}
	clock := func(ctx context.Context) (time.Time, error) {
		return store.ReadValue(ctx, s.st, func(q store.Querier) (time.Time, error) { return q.DBClock(ctx) })
	}
	return monitor.New(monitor.Config{Interval: s.cfg.MetricsInterval, Streams: streams, Replicas: s.cfg.NATS.Replicas,
		ReapInterval: s.cfg.ReapInterval, RedeliverAfter: s.cfg.RedeliverAfter}, monitor.Sources{Stats: stats, Clock: clock, NATS: s.nats.get}, s.log)
}

// traceFlushTimeout bounds the export of the last spans on exit.
const traceFlushTimeout = 5 * time.Second

// ensureQuery creates the query stream and lane consumers, and the
// pre-aggregate stream with its two consumers (NATS_ENABLED).
func (s *Server) ensureQuery(ctx context.Context, c *bus.Conn) error {
	q := s.cfg.Query
	if err := c.EnsureQueryStream(ctx, q.Stream, q.Subject, q.Consumer, 1024); err != nil {
		return err
	}
	p := s.cfg.PreAgg
	return c.EnsurePreAggStream(ctx, p.Stream, p.QuerySubject, p.BuildSubject, p.Consumer, 1024)
}

// buildBacklog reports undelivered build jobs (for the build reaper).
func (s *Server) buildBacklog(ctx context.Context) (int64, error) {
	c := s.nats.get()
	if c == nil || !s.cfg.Query.NATSEnabled {
		return 0, errNotConnected
	}
	cons, err := c.JS.Consumer(ctx, s.cfg.PreAgg.Stream, s.cfg.PreAgg.Consumer+bus.PreAggBuildConsumerSuffix)
	if err != nil {
		return 0, err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int64(ci.NumPending), nil
}

// queryBacklog reports undelivered query jobs (for the query reaper).
func (s *Server) queryBacklog(ctx context.Context) (int64, error) {
	c := s.nats.get()
	if c == nil || !s.cfg.Query.NATSEnabled {
		return 0, errNotConnected
	}
	var n int64
	for _, name := range []string{s.cfg.Query.Consumer, s.cfg.Query.Consumer + bus.QueryInteractiveSuffix} {
		cons, err := c.JS.Consumer(ctx, s.cfg.Query.Stream, name)
		if err != nil {
			return 0, err
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return 0, err
		}
		n += int64(ci.NumPending)
	}
	return n, nil
}

// queryPulling counts pull requests and in-flight jobs of query workers.
func (s *Server) queryPulling(ctx context.Context) (int, error) {
	c := s.nats.get()
	if c == nil || !s.cfg.Query.NATSEnabled {
		return 1, nil // in-process: the server itself consumes
	}
	return bus.QueryWaiting(ctx, c.JS, s.cfg.Query.Stream, s.cfg.Query.Consumer)
}
