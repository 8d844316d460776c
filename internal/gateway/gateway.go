package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/ui"
)

// Timeouts of the gateway's own HTTP server and of its calls to the server.
const (
	// ProxyTimeout bounds a proxied request that is not a stream (NoETL's 300 s).
	ProxyTimeout = 300 * time.Second
	// lookupTimeout bounds a whoami or login call to the server.
	lookupTimeout = 15 * time.Second
	// shutdownGrace is how long Run waits for requests in flight at shutdown.
	shutdownGrace = 10 * time.Second
	// healthTimeout bounds each check of GET /health.
	healthTimeout = 3 * time.Second
)

// Gateway is one gateway replica. Replicas share nothing but NATS (the
// sessions and requests buckets, the callback subjects) and the server.
type Gateway struct {
	cfg      config.Gateway
	log      *slog.Logger
	nats     *bus.Conn
	sessions jetstream.KeyValue // session cache: auth.Hash(secret) → api.WhoAmI (JSON)
	requests jetstream.KeyValue // pending execute-and-wait requests by request id
	upstream *http.Client       // to the server (cfg.ServerURL); no overall timeout: streams
	server   *url.URL           // cfg.ServerURL parsed
	mux      *http.ServeMux
	handler  http.Handler // mux wrapped in CORS
	cors     *corsPolicy
	ingress  map[string]listener
	metrics  *metrics
	reg      *prometheus.Registry
	traces   *telemetry.Provider // OTEL_*; nil when tracing is off

	// closing is closed when the gateway starts shutting down: long-lived
	// handlers (SSE streams, waits) return on it so Run's graceful
	// shutdown does not wait for them.
	closing     chan struct{}
	closingOnce sync.Once // closes closing
	closeOnce   sync.Once // closes NATS
	// anon caches the server's answer for a request without a token (is
	// its auth off?), in memory: it is the same for every caller.
	anonMu sync.Mutex
	anon   anonAnswer
	// The UI's handler, made once the server said whether it has an
	// OIDC issuer (uiServe).
	uiMu      sync.Mutex
	uiHandler http.Handler
	uiKnown   bool
	uiAsked   time.Time
}

// New connects to NATS, makes the buckets if missing and registers every
// route (coreRoutes: login, proxy, ingress, UI; liveRoutes: SSE, execute
// and wait, callbacks).
func New(ctx context.Context, cfg config.Gateway, log *slog.Logger) (*Gateway, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srvURL, err := url.Parse(strings.TrimRight(cfg.ServerURL, "/"))
	if err != nil || (srvURL.Scheme != "http" && srvURL.Scheme != "https") || srvURL.Host == "" {
		return nil, fmt.Errorf("SERVER_API_URL %q: want the server's base URL, e.g. %s", cfg.ServerURL, config.DefaultServerURL)
	}
	if cfg.SessionCacheTTL <= 0 {
		return nil, fmt.Errorf("NATS_SESSION_CACHE_TTL_SECS must be > 0, got %v", cfg.SessionCacheTTL)
	}
	if cfg.RequestTTL <= 0 {
		return nil, fmt.Errorf("NATS_REQUEST_TTL_SECS must be > 0, got %v", cfg.RequestTTL)
	}
	if cfg.MaxBodyBytes <= 0 {
		return nil, fmt.Errorf("MILLRACE_MAX_BODY_BYTES must be > 0, got %d", cfg.MaxBodyBytes)
	}
	cors, err := parseCORS(cfg.CORSOrigins)
	if err != nil {
		return nil, err
	}
	listeners, err := loadIngress(cfg.IngressFile, cfg.Token)
	if err != nil {
		return nil, err
	}
	traces, err := telemetry.Setup(ctx, cfg.Telemetry, "", log)
	if err != nil {
		return nil, err
	}
	conn, err := bus.ConnectOnlyRetry(ctx, natsConfig(cfg.NATS), log)
	if err != nil {
		_ = traces.Shutdown(ctx)
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{
		cfg: cfg, log: log, nats: conn, server: srvURL, cors: cors, ingress: listeners, traces: traces,
		// Calls to the server (the proxy's included) carry the request's trace.
		upstream: &http.Client{Transport: telemetry.Transport(traces.Tracer("github.com/millrace/millrace/internal/gateway"), newTransport())},
		mux:      http.NewServeMux(),
		reg:      prometheus.NewRegistry(),
		closing:  make(chan struct{}),
	}
	g.metrics = newMetrics(g.reg)
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := g.buckets(ctx); err != nil {
		conn.Close()
		_ = traces.Shutdown(ctx)
		return nil, err
	}
	g.coreRoutes()
	g.liveRoutes()
	g.mux.HandleFunc("/", g.noRoute)
	// The span wraps the mux itself, which names the matched route.
	g.handler = g.withCORS(telemetry.Handler(traces.Tracer("github.com/millrace/millrace/internal/gateway"), g.mux))
	return g, nil
}

// natsConfig is a plain connection's configuration: the gateway uses core
// NATS and KV buckets, never the command stream.
func natsConfig(n config.NATS) bus.Config {
	c := n.Bus("millrace-gateway")
	c.Stream, c.Subject, c.Consumer = "", "", ""
	return c
}

// buckets creates or updates the sessions and requests KV buckets. Both
// hold one value per key; their TTL is the bucket's max age. They are made
// with NATS_REPLICAS; an existing bucket keeps its replica count.
func (g *Gateway) buckets(ctx context.Context) error {
	var err error
	g.sessions, err = g.nats.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      g.cfg.SessionBucket,
		Description: "millrace gateway: session cache (the database holds the truth)",
		TTL:         g.cfg.SessionCacheTTL,
		History:     1,
		// A cache: losing it with a NATS restart only costs lookups.
		Storage:  jetstream.MemoryStorage,
		Replicas: g.nats.KeyValueReplicas(ctx, g.cfg.SessionBucket),
	})
	if err != nil {
		return fmt.Errorf("gateway: sessions bucket %q (NATS_SESSION_BUCKET): %w; check that JetStream is enabled and the bucket, if it exists, was made by a gateway", g.cfg.SessionBucket, err)
	}
	g.requests, err = g.nats.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      g.cfg.RequestBucket,
		Description: "millrace gateway: pending execute-and-wait requests",
		TTL:         g.cfg.RequestTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    g.nats.KeyValueReplicas(ctx, g.cfg.RequestBucket),
	})
	if err != nil {
		return fmt.Errorf("gateway: requests bucket %q (NATS_REQUEST_BUCKET): %w; check that JetStream is enabled and the bucket, if it exists, was made by a gateway", g.cfg.RequestBucket, err)
	}
	return nil
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 0 // a stream's headers may come late; ProxyTimeout bounds the rest
	return t
}

// handle registers pattern with h, timed under the pattern (ids in paths
// do not make a series each).
func (g *Gateway) handle(pattern string, h http.HandlerFunc) {
	g.mux.Handle(pattern, g.metrics.instrument(pattern, h))
}

// coreRoutes registers health, metrics, logins, the proxy, ingress and the UI.
func (g *Gateway) coreRoutes() {
	g.handle("GET /health", g.health)
	g.mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	g.sessionRoutes()
	g.proxyRoutes()
	g.ingressRoutes()
	g.uiRoutes()
}

// Handler is the gateway's HTTP handler, CORS included.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Closing is closed when the gateway begins to shut down.
func (g *Gateway) Closing() <-chan struct{} { return g.closing }

// Close stops long-lived handlers and closes the NATS connection. Run
// calls it; a test serving Handler itself calls it when done.
func (g *Gateway) Close() {
	g.stopStreams()
	g.closeOnce.Do(func() {
		g.nats.Close()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := g.traces.Shutdown(ctx); err != nil {
			g.log.Warn("some spans were not exported", "err", err)
		}
	})
}

// stopStreams tells long-lived handlers to return.
func (g *Gateway) stopStreams() { g.closingOnce.Do(func() { close(g.closing) }) }

// Run serves on cfg.Addr until ctx ends, then shuts down gracefully:
// streams end at once (clients reconnect with Last-Event-ID), other
// requests get shutdownGrace to finish.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		g.Close()
		return fmt.Errorf("gateway: listen on %s (MILLRACE_GATEWAY_ADDR): %w", g.cfg.Addr, err)
	}
	return g.Serve(ctx, ln)
}

// Serve is Run on a listener of the caller's.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: g.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(g.stopStreams)
	g.log.Info("gateway ready", "addr", ln.Addr().String(), "server", g.server.String(),
		"nats", bus.Redact(g.nats.NC.ConnectedUrl()), "cors_allowed_origins", g.cfg.CORSOrigins, "ingress_listeners", len(g.ingress))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		g.Close()
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	g.log.Info("gateway shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	g.Close()
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}

// apiURL is the server's URL for path (which starts with /).
func (g *Gateway) apiURL(path string) string { return g.server.String() + path }

// writeJSON writes v as the JSON reply with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr writes the API's error envelope.
func writeErr(w http.ResponseWriter, e *apierr.Error) {
	writeJSON(w, e.Status(), apierr.Envelope{Error: e})
}

// noRoute answers a path the gateway does not serve.
func (g *Gateway) noRoute(w http.ResponseWriter, r *http.Request) {
	writeErr(w, apierr.New(apierr.NotFound, "no gateway route %s %s; the API is under /noetl/ (see docs/gateway.md)", r.Method, r.URL.Path))
}

// health is GET /health: is NATS connected and is the server reachable?
// 200 when both are, else 503; never needs a token.
func (g *Gateway) health(w http.ResponseWriter, r *http.Request) {
	type check struct {
		OK    bool   `json:"ok"`
		Error string `json:"error,omitempty"`
	}
	var reply struct {
		Status string `json:"status"`
		NATS   check  `json:"nats"`
		Server check  `json:"server"`
	}
	reply.NATS.OK = g.nats.NC.IsConnected()
	if !reply.NATS.OK {
		reply.NATS.Error = "not connected (status " + g.nats.NC.Status().String() + "); the gateway reconnects by itself"
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.apiURL("/api/health"), nil)
	resp, err := g.upstream.Do(req)
	switch {
	case err != nil:
		reply.Server.Error = "unreachable at " + g.server.String() + " (SERVER_API_URL): " + err.Error()
	case resp.StatusCode >= 500:
		reply.Server.Error = fmt.Sprintf("GET /api/health answered %d", resp.StatusCode)
	default:
		reply.Server.OK = true
	}
	if resp != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	code := http.StatusOK
	reply.Status = "ok"
	if !reply.NATS.OK || !reply.Server.OK {
		code, reply.Status = http.StatusServiceUnavailable, "degraded"
	}
	writeJSON(w, code, reply)
}

// metrics are the gateway's own series, on a registry of its own (two
// replicas in one test process must not collide).
type metrics struct {
	requests *prometheus.HistogramVec
	sessions *prometheus.CounterVec
	proxy    *prometheus.CounterVec
	ingress  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "millrace_gateway_request_duration_seconds",
			Help:    "Gateway HTTP latency by route and status code (streams count until they end).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "code"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_gateway_session_lookups_total",
			Help: "Token lookups by result: hit (sessions bucket), miss (asked the server), denied (401), error (server or NATS failed).",
		}, []string{"result"}),
		proxy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_gateway_proxy_requests_total",
			Help: "Requests proxied to the server by outcome: ok (any server answer), upstream_error (502), too_large (413).",
		}, []string{"outcome"}),
		ingress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_gateway_ingress_total",
			Help: "Webhook deliveries by listener and outcome: started, bad_signature, bad_body, too_large, failed.",
		}, []string{"listener", "outcome"}),
	}
	reg.MustRegister(m.requests, m.sessions, m.proxy, m.ingress)
	return m
}

func (m *metrics) instrument(pattern string, h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerDuration(m.requests.MustCurryWith(prometheus.Labels{"route": pattern}), h)
}

// uiRoutes mounts the web UI under /ui/, talking to the API through the
// proxy (/noetl). Its files are public; the data behind them is not.
func (g *Gateway) uiRoutes() {
	g.handle("GET /ui/", g.uiServe)
	g.handle("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Prefix, http.StatusMovedPermanently)
	})
}

// uiRetry is how often the UI handler asks the server for its OIDC issuer
// again while it has not answered.
const uiRetry = 10 * time.Second

// uiServe serves the UI. The page's Content-Security-Policy must name the
// OIDC issuer, which only the server knows (GET /api/auth/config): asked
// on first use, and again every uiRetry until the server answers.
func (g *Gateway) uiServe(w http.ResponseWriter, r *http.Request) {
	g.uiMu.Lock()
	if g.uiHandler == nil || (!g.uiKnown && time.Since(g.uiAsked) >= uiRetry) {
		g.uiAsked = time.Now()
		issuer, err := g.oidcIssuer(r.Context())
		if err != nil {
			g.log.Warn("ask the server for its login settings (the UI works, without SSO until it answers)", "error", err)
		}
		g.uiKnown = err == nil
		g.uiHandler = ui.Handler(ui.Config{APIBase: strings.TrimSuffix(ProxyPrefix, "/"), AuthBase: "/api/auth", OIDCIssuer: issuer})
	}
	h := g.uiHandler
	g.uiMu.Unlock()
	h.ServeHTTP(w, r)
}

// oidcIssuer asks the server for its OIDC issuer ("" when it has none).
func (g *Gateway) oidcIssuer(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.apiURL("/api/auth/config"), nil)
	resp, err := g.upstream.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /api/auth/config answered %d", resp.StatusCode)
	}
	var c api.AuthConfig
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&c); err != nil {
		return "", fmt.Errorf("GET /api/auth/config: %w", err)
	}
	if c.OIDC == nil {
		return "", nil
	}
	return c.OIDC.Issuer, nil
}
