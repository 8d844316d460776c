// Package server is Millrace's HTTP API: a thin JSON layer over package flow
// (writes) and the store (reads), plus health and Prometheus metrics.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/monitor"
	"github.com/millrace/millrace/internal/query"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/ui"
	"github.com/millrace/millrace/internal/wire"
)

// Paging defaults for list endpoints.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
	maxBatchEvents  = 1000
)

// API serves HTTP.
type API struct {
	flow    *flow.Service
	st      *store.Store
	log     *slog.Logger
	maxBody int64
	health  func(ctx context.Context) api.Health
	mux     *http.ServeMux
	box     *secret.Box    // seals credentials; nil disables the credential API
	query   *query.Service // the warehouse-query face; nil disables /api/v2
	routes  []Route
	// authn looks up tokens and opens sessions; open is MILLRACE_AUTH=none
	// (and a nil authn): guard lets every request through.
	authn   *auth.Authenticator
	open    bool
	uiCfg   ui.Config                         // the web UI's settings (uiapi.go)
	streams func(context.Context) api.Streams // GET /api/streams; nil: not reported
	live    liveAPI
	ops     *monitor.Monitor // GET /api/ops and this server's gauges (opsapi.go); nil: neither
	// tracer makes a span of every request (WithTracer); nil: tracing off.
	tracer trace.Tracer
	// h serves: the mux, wrapped by the tracing middleware when on.
	h http.Handler
	// shed bounds the writes in flight (shed.go); nil: unbounded.
	shed *shedder
	// idemTTL: how long an Idempotency-Key is remembered (idempotency.go).
	idemTTL time.Duration
}

var mRequests = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "millrace_http_request_duration_seconds",
	Help:    "HTTP API latency by route and status code.",
	Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
}, []string{"route", "code"})

// NewAPI builds the handler.
func NewAPI(fl *flow.Service, log *slog.Logger, maxBody int64, health func(ctx context.Context) api.Health, opts ...Option) *API {
	a := &API{flow: fl, st: fl.Store(), log: log, maxBody: maxBody, health: health, mux: http.NewServeMux(),
		idemTTL: config.DefaultIdempotencyTTL}
	for _, o := range opts {
		o(a)
	}
	a.route("POST /api/catalog/register", auth.Operators, a.register)
	a.route("GET /api/catalog", auth.Readers, a.catalogList)
	a.route("GET /api/catalog/{path...}", auth.Readers, a.catalogGet)
	a.route("POST /api/execute", auth.OperatorsAndWorkers, a.execute)
	a.route("GET /api/executions", auth.Readers, a.executionList)
	a.route("GET /api/executions/{id}", auth.ReadersAndWorkers, a.executionGet)
	a.route("GET /api/executions/{id}/events", auth.ReadersAndWorkers, a.executionEvents)
	a.route("POST /api/executions/{id}/cancel", auth.OperatorsAndWorkers, a.executionCancel)
	a.route("POST /api/executions/{id}/fail", auth.Operators, a.executionFail)
	a.route("GET /api/commands/{event_id}", auth.ReadersAndWorkers, a.commandGet)
	a.route("POST /api/commands/claim", auth.Workers, a.commandClaimBatch)
	a.route("POST /api/commands/{event_id}/claim", auth.Workers, a.commandClaim)
	a.route("POST /api/commands/{event_id}/release", auth.Workers, a.commandRelease)
	a.route("POST /api/events", auth.Workers, a.eventPost)
	a.route("POST /api/events/batch", auth.Workers, a.eventBatch)
	a.route("GET /api/health", auth.Public, a.healthGet)
	a.route("GET /api/health/live", auth.Public, a.healthLive)
	a.credentialRoutes()
	a.resealRoutes()
	a.queryRoutes()
	a.liveRoutes()
	a.authRoutes()
	a.handle("GET /metrics", auth.Public, a.metrics().ServeHTTP)
	a.uiRoutes()
	// Patterns with a method never match another method, so a wrong method
	// on a known path lands here too: noRoute tells the two apart.
	a.mux.HandleFunc("/", a.noRoute)
	// Wrapped once, around the mux, so that the span knows the matched
	// route; with tracing off h is the mux itself.
	a.h = telemetry.Handler(a.tracer, a.shed.wrap(a.mux))
	return a
}

// methods are those a route may take; noRoute tries each to build Allow.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// noRoute answers a request no route took: 405 with an Allow header when
// the path has routes for other methods, else 404.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		writeErr(w, apierr.New(apierr.NotFound, "no route %s %s; see docs/api.md", r.Method, r.URL.Path))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeErr(w, apierr.New(apierr.MethodNotAllowed, "%s is not allowed on %s; use %s (see docs/api.md)", r.Method, r.URL.Path, strings.Join(allow, " or ")))
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.h.ServeHTTP(w, r) }

// WithTracer makes a server span of every request, named "METHOD
// /route/pattern", a child of the request's traceparent. A nil tr (tracing
// off) adds nothing to a request's path.
func WithTracer(tr trace.Tracer) Option { return func(a *API) { a.tracer = tr } }

// handler serves one route. It returns the body of a 200 reply, a reply
// for another status, or an error that fail maps to the API's error form.
type handler func(w http.ResponseWriter, r *http.Request) (any, error)

// reply is a handler result whose status is not 200.
type reply struct {
	status int
	body   any
}

func (a *API) route(pattern string, access auth.Access, h handler) {
	a.handle(pattern, access, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, a.maxBody)
		if err := checkURLNUL(r); err != nil {
			a.fail(w, r, err)
			return
		}
		v, err := h(w, r)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		code := http.StatusOK
		if rp, ok := v.(reply); ok {
			code, v = rp.status, rp.body
		}
		writeJSON(w, code, v)
	})
}

// handle serves pattern with h, timed by promhttp under the route's
// pattern, so that ids in paths do not make a series each.
// Every route declares its access (package auth), which guard enforces and
// Routes lists for the route × role matrix of docs/security.md.
func (a *API) handle(pattern string, access auth.Access, h http.HandlerFunc) {
	a.routes = append(a.routes, auth.Route{Pattern: pattern, Access: access})
	obs := mRequests.MustCurryWith(prometheus.Labels{"route": pattern})
	a.mux.Handle(pattern, promhttp.InstrumentHandlerDuration(obs, a.guard(access, h)))
}

// Route is one served route and who may use it.
type Route = auth.Route

// Routes lists every route in the order they were registered.
func (a *API) Routes() []Route { return append([]Route(nil), a.routes...) }

var mDenied = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "millrace_auth_denied_total",
	Help: "Requests refused: reason missing or invalid (401: no token, or an unknown, expired or revoked one), role (403).",
}, []string{"reason"})

// guard enforces access on h and puts the request's principal in its
// context. With auth off every request gets the open principal. A public
// route runs for anyone, with the principal of a valid token if it carries
// one.
func (a *API) guard(access auth.Access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.open || a.authn == nil {
			h(w, r.WithContext(auth.WithPrincipal(r.Context(), auth.Principal{Open: true})))
			return
		}
		secret := auth.SecretFrom(r)
		if access.Public {
			if secret != "" {
				if p, err := a.authn.Authenticate(r.Context(), secret); err == nil {
					r = r.WithContext(auth.WithPrincipal(r.Context(), p))
				}
			}
			h(w, r)
			return
		}
		if secret == "" {
			a.deny(w, "missing", auth.ErrUnauthenticated)
			return
		}
		p, err := a.authn.Authenticate(r.Context(), secret)
		if e, ok := apierr.As(err); ok && e.Code == apierr.Unauthenticated {
			a.deny(w, "invalid", e)
			return
		} else if err != nil {
			a.fail(w, r, err)
			return
		}
		if !access.Allows(p.Role) {
			a.deny(w, "role", apierr.New(apierr.Forbidden, "role %s may not use %s; it is for role %s (docs/security.md has the route × role matrix)",
				p.Role, r.Pattern, access))
			return
		}
		h(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	}
}

func (a *API) deny(w http.ResponseWriter, reason string, e *apierr.Error) {
	mDenied.WithLabelValues(reason).Inc()
	if e.Code == apierr.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="millrace"`)
	}
	writeErr(w, e)
}

// fail maps err to a JSON error response and returns the status.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) int {
	e, caused := apiError(err)
	if !caused {
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeErr(w, e)
	return e.Status()
}

func writeErr(w http.ResponseWriter, e *apierr.Error) {
	retryAfter(w, e)
	writeJSON(w, e.Status(), apierr.Envelope{Error: e})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// checkURLNUL refuses a path or query parameter holding a NUL (%00): the
// store cannot keep one, and a lookup by it would fail as an internal error.
func checkURLNUL(r *http.Request) error {
	if strings.IndexByte(r.URL.Path, 0) >= 0 {
		return apierr.New(apierr.NULCharacter, "the request path holds a NUL character (%%00); remove it")
	}
	if strings.Contains(r.URL.RawQuery, "%00") {
		for k, vs := range r.URL.Query() {
			for _, v := range vs {
				if strings.IndexByte(k+v, 0) >= 0 {
					return apierr.New(apierr.NULCharacter, "query parameter %q holds a NUL character (%%00); remove it", strings.ReplaceAll(k, "\x00", ""))
				}
			}
		}
	}
	return nil
}

// decode reads a JSON body strictly (apierr.Decode).
func decode(r *http.Request, v any) error {
	return apierr.Decode(r.Body, v, "MILLRACE_MAX_BODY_BYTES")
}

func pathInt(r *http.Request, name string) (int64, error) {
	v := r.PathValue(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, apierr.New(apierr.BadRequest, "%s must be a positive integer, got %q", name, v)
	}
	return n, nil
}

func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, apierr.New(apierr.BadRequest, "%s must be an integer between %d and %d, got %q", name, lo, hi, v)
	}
	return n, nil
}

func (a *API) register(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.RegisterRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if strings.TrimSpace(body.Content) == "" {
		return nil, apierr.New(apierr.BadRequest, "content is required: the playbook YAML as a string")
	}
	e, err := a.flow.RegisterFile(r.Context(), body.File, body.Content)
	if err != nil {
		return nil, err
	}
	return api.Registered{Path: e.Path, Version: e.Version, CatalogID: e.CatalogID, Warnings: a.flow.Warnings(e.CatalogID)}, nil
}

func (a *API) catalogList(w http.ResponseWriter, r *http.Request) (any, error) {
	list, err := store.ReadValue(r.Context(), a.st, func(q store.Querier) ([]store.CatalogEntry, error) {
		return q.CatalogList(r.Context())
	})
	out := api.CatalogList{Entries: make([]api.CatalogEntry, len(list))}
	for i, e := range list {
		out.Entries[i] = wire.CatalogEntry(e)
	}
	return out, err
}

func (a *API) catalogGet(w http.ResponseWriter, r *http.Request) (any, error) {
	e, err := a.loadCatalog(r)
	if err != nil {
		return nil, err
	}
	return wire.CatalogEntry(e), nil
}

// loadCatalog reads the playbook the request's {path} and ?version= name
// (0 or none: the latest).
func (a *API) loadCatalog(r *http.Request) (store.CatalogEntry, error) {
	path := r.PathValue("path")
	version, err := queryInt(r, "version", 0, 0, 1<<30)
	if err != nil {
		return store.CatalogEntry{}, err
	}
	e, err := store.ReadValue(r.Context(), a.st, func(q store.Querier) (store.CatalogEntry, error) {
		return q.CatalogGet(r.Context(), path, version)
	})
	if errors.Is(err, store.ErrNotFound) {
		return e, apierr.New(apierr.PlaybookNotFound, "playbook %q (version %d; 0 = latest) is not registered", path, version)
	}
	return e, err
}

func (a *API) execute(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.ExecuteRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.Path == "" {
		return nil, apierr.New(apierr.BadRequest, "path is required: the metadata.path of a registered playbook")
	}
	if body.Version < 0 {
		return nil, apierr.New(apierr.BadRequest, "version must be >= 1, or omitted for the latest")
	}
	ctx, idem, err := a.idempotent(r, store.IdemExecution, body)
	if err != nil {
		return nil, err
	}
	exec, err := a.flow.Start(ctx, flow.ChildStart{Path: body.Path, Version: body.Version, Payload: body.Payload,
		Parent: body.ParentExecutionID, ParentCommand: body.ParentCommandID, ParentTask: body.ParentTask, ParentAttempt: body.ParentAttempt})
	if v, ok, err := a.replayed(w, r, idem, err); ok || err != nil {
		return v, err
	}
	return api.Started{ExecutionID: exec.ExecutionID, Status: exec.Status}, nil
}

func (a *API) executionList(w http.ResponseWriter, r *http.Request) (any, error) {
	page, err := queryInt(r, "page", 1, 1, 1<<30)
	if err != nil {
		return nil, err
	}
	size, err := queryInt(r, "page_size", DefaultPageSize, 1, MaxPageSize)
	if err != nil {
		return nil, err
	}
	filter, err := executionFilter(r)
	if err != nil {
		return nil, err
	}
	var list []store.Execution
	var total int64
	err = a.st.Read(r.Context(), func(q store.Querier) error {
		var err error
		list, total, err = q.ExecutionList(r.Context(), filter, (page-1)*size, size)
		return err
	})
	out := make([]api.Execution, len(list))
	for i, e := range list {
		out[i] = wire.Execution(e)
	}
	return api.ExecutionPage{Executions: out, Page: page, PageSize: size, Total: total}, err
}

// executionFilter reads GET /api/executions' filters: status (one of the
// execution statuses) and path (exact, or a prefix when it ends in '*').
func executionFilter(r *http.Request) (store.ExecutionFilter, error) {
	var f store.ExecutionFilter
	qs := r.URL.Query()
	if st := qs.Get("status"); st != "" {
		switch s := api.ExecStatus(st); s {
		case api.ExecRunning, api.ExecCompleted, api.ExecFailed, api.ExecCancelled:
			f.Status = s
		default:
			return f, apierr.New(apierr.BadRequest, "status %q is not one of running, completed, failed, cancelled", st)
		}
	}
	f.Path = qs.Get("path")
	if p, ok := strings.CutSuffix(f.Path, "*"); ok {
		f.Path, f.PathPrefix = p, true
	}
	return f, nil
}

func (a *API) loadExecution(r *http.Request) (store.Execution, error) {
	id, err := pathInt(r, "id")
	if err != nil {
		return store.Execution{}, err
	}
	e, err := store.ReadValue(r.Context(), a.st, func(q store.Querier) (store.Execution, error) {
		return q.ExecutionGet(r.Context(), id)
	})
	if errors.Is(err, store.ErrNotFound) {
		return e, apierr.New(apierr.ExecNotFound, "execution %d does not exist", id)
	}
	return e, err
}

func (a *API) executionGet(w http.ResponseWriter, r *http.Request) (any, error) {
	e, err := a.loadExecution(r)
	if err != nil {
		return nil, err
	}
	// Large results are stored by reference; readers never see that.
	e.Result, err = store.ReadValue(r.Context(), a.st, func(q store.Querier) (json.RawMessage, error) {
		return flow.LoadResult(r.Context(), q, e.Result)
	})
	return wire.Execution(e), err
}

func (a *API) executionEvents(w http.ResponseWriter, r *http.Request) (any, error) {
	e, err := a.loadExecution(r)
	if err != nil {
		return nil, err
	}
	after, limit, paged, err := eventsPage(r)
	if err != nil {
		return nil, err
	}
	if paged {
		evs, err := a.eventsAfter(r.Context(), e.ExecutionID, after, nil, limit)
		return api.EventList{Events: evs}, err
	}
	var evs []store.Event
	err = a.st.Read(r.Context(), func(q store.Querier) error {
		var err error
		if evs, err = q.EventList(r.Context(), e.ExecutionID); err != nil {
			return err
		}
		for i := range evs {
			if evs[i].Result, err = flow.LoadResult(r.Context(), q, evs[i].Result); err != nil {
				return err
			}
		}
		return nil
	})
	return api.EventList{Events: wire.Events(evs)}, err
}

func (a *API) executionCancel(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathInt(r, "id")
	if err != nil {
		return nil, err
	}
	var e store.Execution
	if r.URL.Query().Get("cascade") == "true" {
		e, _, err = a.flow.CancelCascade(r.Context(), id)
	} else {
		e, err = a.flow.Cancel(r.Context(), id)
	}
	if err != nil {
		return nil, err
	}
	return wire.Execution(e), nil
}

func (a *API) commandGet(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathInt(r, "event_id")
	if err != nil {
		return nil, err
	}
	var c store.Command
	err = a.st.Read(r.Context(), func(q store.Querier) error {
		var err error
		if c, err = q.CommandGet(r.Context(), id); err != nil {
			return err
		}
		c.Result, err = flow.LoadResult(r.Context(), q, c.Result)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.New(apierr.CommandNotFound, "command %d does not exist", id)
	}
	return wire.Command(c), err
}

func (a *API) commandClaim(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathInt(r, "event_id")
	if err != nil {
		return nil, err
	}
	var body api.ClaimRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.WorkerID == "" {
		return nil, apierr.New(apierr.BadRequest, "worker_id is required")
	}
	claim := a.flow.Claim
	if body.Start {
		claim = a.flow.ClaimAndStart
	}
	cl, err := claim(r.Context(), id, body.WorkerID, body.ExecutionID, auth.ClaimTokenID(r.Context()))
	if err != nil {
		return nil, err
	}
	return claimed(cl), nil
}

func (a *API) commandRelease(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathInt(r, "event_id")
	if err != nil {
		return nil, err
	}
	var body api.ClaimRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.WorkerID == "" || body.Attempt < 1 {
		return nil, apierr.New(apierr.BadRequest, "worker_id and attempt (>= 1) are required")
	}
	if err := a.flow.Release(r.Context(), id, body.WorkerID, body.Attempt, auth.ClaimTokenID(r.Context())); err != nil {
		return nil, err
	}
	return api.Released{Status: "released"}, nil
}

// EventIn is the body of POST /api/events. The command is named by
// event_id (its command.issued event) or by command_id.
type EventIn struct {
	EventType string          `json:"event_type"`
	EventID   int64           `json:"event_id,omitempty"`
	CommandID string          `json:"command_id,omitempty"`
	WorkerID  string          `json:"worker_id"`
	Attempt   int             `json:"attempt"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     json.RawMessage `json:"error,omitempty"` // a string or {kind, message, retryable}
	// Context is what a task list assigned to the execution's context
	// ("ctx.<path>" -> value), merged in when the command completes.
	Context json.RawMessage `json:"context,omitempty"`
	// Informational fields workers may send; they are checked, not trusted.
	ExecutionID int64  `json:"execution_id,omitempty"`
	Step        string `json:"step,omitempty"`
}

func (in EventIn) report() (flow.Report, error) {
	id := in.EventID
	if in.CommandID != "" {
		i := strings.LastIndexByte(in.CommandID, ':')
		n, err := strconv.ParseInt(in.CommandID[i+1:], 10, 64)
		if i < 0 || err != nil {
			return flow.Report{}, apierr.New(apierr.BadRequest, "command_id %q is not <execution_id>:<step>:<event_id>", in.CommandID)
		}
		if id != 0 && id != n {
			return flow.Report{}, apierr.New(apierr.BadRequest, "event_id %d does not match command_id %q", id, in.CommandID)
		}
		id = n
	}
	if id <= 0 {
		return flow.Report{}, apierr.New(apierr.BadRequest, "event_id (the command's command.issued event) or command_id is required")
	}
	if in.EventType == "" {
		return flow.Report{}, apierr.New(apierr.BadRequest, "event_type is required")
	}
	msg, retryable, err := errorText(in.Error)
	if err != nil {
		return flow.Report{}, err
	}
	if in.EventType == api.EvCommandFailed && msg == "" {
		msg = "failed without an error message"
	}
	cx, err := reportContext(in.Context)
	if err != nil {
		return flow.Report{}, err
	}
	return flow.Report{EventType: in.EventType, EventID: id, WorkerID: in.WorkerID, Attempt: in.Attempt, Result: in.Result, Error: msg,
		Retryable: retryable, ExecutionID: in.ExecutionID, Context: cx}, nil
}

// reportContext decodes a report's context: an object of the context paths
// a task list assigned ("ctx.<path>") to their values, numbers kept as json.Number so that
// 64-bit ids reach the execution's context exact, as results do.
func reportContext(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var cx map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&cx); err != nil {
		return nil, apierr.New(apierr.BadRequest, "context must be a JSON object of context names to values (what the task list assigned): %v", err)
	}
	for k := range cx {
		path, ok := strings.CutPrefix(k, "ctx.")
		if !ok || strings.ContainsAny(path, " \t\n") || slices.Contains(strings.Split(path, "."), "") {
			return nil, apierr.New(apierr.BadRequest, "context key %q is not a context path (send {\"ctx.x.y\": v} for what the task list assigned to ctx.x.y)", k)
		}
	}
	return cx, nil
}

// errorText flattens an error given as a string or a structured object.
func errorText(raw json.RawMessage) (string, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, false, nil
	}
	var e struct {
		Kind      string `json:"kind"`
		Message   string `json:"message"`
		Retryable bool   `json:"retryable"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Message == "" {
		return "", false, apierr.New(apierr.BadRequest, "error must be a string or {\"kind\", \"message\", \"retryable\"}")
	}
	if e.Kind != "" {
		return fmt.Sprintf("%s: %s", e.Kind, e.Message), e.Retryable, nil
	}
	return e.Message, e.Retryable, nil
}

func (a *API) eventPost(w http.ResponseWriter, r *http.Request) (any, error) {
	var in EventIn
	if err := decode(r, &in); err != nil {
		return nil, err
	}
	rep, err := in.report()
	if err != nil {
		return nil, err
	}
	rep.TokenID = auth.ClaimTokenID(r.Context())
	ack, err := a.flow.Apply(r.Context(), rep)
	if err != nil {
		return nil, err
	}
	return api.Ack{EventID: ack.EventID, Status: ack.Status}, nil
}

// claimed is a granted claim on the wire.
func claimed(cl flow.Claimed) api.Claimed {
	return api.Claimed{Command: wire.Command(cl.Command), LeaseTTLMillis: cl.LeaseTTL.Milliseconds()}
}

// batchError turns one item's failure into its wire form.
func (a *API) batchError(err error, what string) (*apierr.Error, int) {
	e, caused := apiError(err)
	if !caused {
		a.log.Error(what+" failed", "err", err)
	}
	return e, e.Status()
}

// commandClaimBatch claims several commands for one worker: what a busy
// worker sends instead of one claim request per notification.
func (a *API) commandClaimBatch(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.ClaimBatchRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.WorkerID == "" {
		return nil, apierr.New(apierr.BadRequest, "worker_id is required")
	}
	if len(body.Commands) == 0 || len(body.Commands) > maxBatchEvents {
		return nil, apierr.New(apierr.BadRequest, "commands must hold 1 to %d commands", maxBatchEvents)
	}
	// One store caller and one claim statement for the batch; each
	// command still gets its own answer.
	out := make([]api.ClaimResult, len(body.Commands))
	reqs := make([]flow.ClaimRequest, 0, len(body.Commands))
	at := make([]int, 0, len(body.Commands)) // reqs[k] answers body.Commands[at[k]]
	for i, c := range body.Commands {
		if c.EventID <= 0 {
			out[i].Error, out[i].HTTPStatus = a.batchError(apierr.New(apierr.BadRequest, "event_id must be a positive command event id"), "batch claim")
			continue
		}
		reqs = append(reqs, flow.ClaimRequest{EventID: c.EventID, ExecutionID: c.ExecutionID, WorkerID: body.WorkerID,
			TokenID: auth.ClaimTokenID(r.Context()), Start: body.Start})
		at = append(at, i)
	}
	for k, ans := range a.flow.ClaimMany(r.Context(), reqs) {
		i := at[k]
		if ans.Err != nil {
			out[i].Error, out[i].HTTPStatus = a.batchError(ans.Err, "batch claim")
			continue
		}
		w := claimed(ans.Claimed)
		out[i].Claimed = &w
	}
	return api.ClaimBatch{Results: out}, nil
}

func (a *API) eventBatch(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		Events []EventIn `json:"events"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if len(body.Events) == 0 || len(body.Events) > maxBatchEvents {
		return nil, apierr.New(apierr.BadRequest, "events must hold 1 to %d events", maxBatchEvents)
	}
	// Completions go as one store caller with one finish statement
	// (flow.ApplyMany); each report still gets its own answer.
	out := make([]api.ReportResult, len(body.Events))
	reps := make([]flow.Report, 0, len(body.Events))
	at := make([]int, 0, len(body.Events)) // reps[k] answers body.Events[at[k]]
	for i := range body.Events {
		rep, err := body.Events[i].report()
		if err != nil {
			out[i].Error, out[i].HTTPStatus = a.batchError(err, "batch event")
			continue
		}
		rep.TokenID = auth.ClaimTokenID(r.Context())
		reps = append(reps, rep)
		at = append(at, i)
	}
	for k, ans := range a.flow.ApplyMany(r.Context(), reps) {
		i := at[k]
		if ans.Err != nil {
			out[i].Error, out[i].HTTPStatus = a.batchError(ans.Err, "batch event")
			continue
		}
		out[i] = api.ReportResult{EventID: ans.Ack.EventID, Status: ans.Ack.Status}
	}
	return api.ReportBatch{Results: out}, nil
}

// healthLive is the liveness probe: it answers while the process serves
// HTTP and checks nothing else, so a database or NATS outage never restarts
// every server at once (readiness, GET /api/health, takes them out of
// service instead).
func (a *API) healthLive(w http.ResponseWriter, r *http.Request) (any, error) {
	return map[string]string{"status": "ok"}, nil
}

func (a *API) healthGet(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	h := a.health(ctx)
	// 503 only when the store is down: with NATS down the server still
	// accepts work (it waits in the outbox), so it must stay in service.
	if h.Store != "ok" {
		return reply{http.StatusServiceUnavailable, h}, nil
	}
	return h, nil
}
