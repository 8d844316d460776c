package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/live"
)

// liveRoutes registers the live half of the gateway: the NoETL JSON-RPC SSE
// channel, the per-execution event stream, execute-and-wait and the
// callback playbooks post their results to.
func (g *Gateway) liveRoutes() {
	// How many streams and waits each route holds open right now: the
	// latency histogram only sees them when they end.
	open := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "millrace_gateway_live_open",
		Help: "Requests the live routes hold open now, by route: SSE streams (GET /events, GET /api/executions/{id}/stream) and execute-and-wait waits (POST /api/execute).",
	}, []string{"route"})
	g.reg.MustRegister(open)
	held := func(pattern string, h http.HandlerFunc) {
		gauge := open.WithLabelValues(pattern)
		g.handle(pattern, func(w http.ResponseWriter, r *http.Request) {
			gauge.Inc()
			defer gauge.Dec()
			h(w, r)
		})
	}
	// Both streams also take the session from ?session_token= (an
	// EventSource cannot set headers).
	held("GET /events", g.authedSSE(auth.Readers, g.events))
	held("GET /api/executions/{id}/stream", g.authedSSE(auth.Readers, g.executionStream))
	held("POST /api/execute", g.authed(auth.Operators, g.executeWait))
	// Public: the request id (122 random bits, known only to the caller and
	// the execution it started) is the capability, as in NoETL.
	g.handle("POST /api/internal/callback", g.callback)
}

// executionStream is GET /api/executions/{id}/stream on the gateway: the
// execution's events as SSE (id: event id), read back from the server's
// event table after Last-Event-ID, woken by the server's notes on
// <updates prefix><id>. Nothing lives in the gateway, so a client that
// reconnects to another replica (or after a restart) resumes exactly.
func (g *Gateway) executionStream(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeLiveError(w, apierr.New(apierr.ExecNotFound, "execution %q does not exist: ids are positive integers", r.PathValue("id")))
		return
	}
	live.Config{Done: g.closing, Log: g.log}.Stream(w, r, gatewaySource{g: g, token: secretOf(r)}, id)
}

// gatewaySource is live.Source over the server's HTTP API (with the
// caller's token) and core NATS notes.
type gatewaySource struct {
	g     *Gateway
	token string
}

func (s gatewaySource) Execution(ctx context.Context, id int64) (api.Execution, error) {
	return s.g.serverExecution(ctx, s.token, id)
}

func (s gatewaySource) EventsAfter(ctx context.Context, execID, afterID int64, limit int) ([]api.Event, error) {
	return s.g.serverEventsAfter(ctx, s.token, execID, afterID, limit)
}

// Subscribe wakes the stream on each note; a note is only a hint, so a
// failed subscription costs latency (the stream polls), never events.
func (s gatewaySource) Subscribe(execID int64) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	sub, err := s.g.nats.NC.Subscribe(s.g.updatesSubject(execID), func(*nats.Msg) {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is pending already
		}
	})
	if err != nil {
		s.g.log.Warn("stream: could not subscribe to an execution's updates; polling", "execution_id", execID, "error", err)
		return ch, func() {}
	}
	return ch, func() { _ = sub.Unsubscribe() }
}

// subscribeTo delivers subject's messages into ch and drops those that do
// not fit: notes and callbacks are hints backed by reads of the server and
// the requests bucket, and a slow handler must not make NATS cut the
// connection's other subscriptions off as a slow consumer.
func (g *Gateway) subscribeTo(subject string, ch chan<- *nats.Msg) (*nats.Subscription, error) {
	return g.nats.NC.Subscribe(subject, func(m *nats.Msg) {
		select {
		case ch <- m:
		default:
		}
	})
}

// secretOf is the secret the caller's request carried, as authed checked
// it: forwarded to the server unchanged ("" when the server's auth is off).
func secretOf(r *http.Request) string {
	c, _ := callerFrom(r.Context())
	return c.secret
}

// callServer makes one JSON call to the server with the caller's token.
// Errors are *apierr.Error: the server's own, or upstream_unavailable when
// it could not be reached.
func (g *Gateway) callServer(ctx context.Context, token, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return apierr.New(apierr.Internal, "encode request to the server: %v", err)
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, g.apiURL(path), body)
	if err != nil {
		return apierr.New(apierr.Internal, "build request to the server: %v", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := g.upstream.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return apierr.New(apierr.UpstreamUnavailable, "the Millrace server at %s is not reachable (%v); check SERVER_API_URL and that the server runs", g.cfg.ServerURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return apierr.New(apierr.UpstreamUnavailable, "reading the server's answer to %s %s: %v", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var env apierr.Envelope
		if json.Unmarshal(raw, &env) == nil && env.Error != nil && env.Error.Code != "" {
			return env.Error
		}
		if resp.StatusCode >= 500 {
			return apierr.New(apierr.UpstreamUnavailable, "the server answered %s %s with %d", method, path, resp.StatusCode)
		}
		return apierr.New(apierr.BadRequest, "the server answered %s %s with %d: %.200s", method, path, resp.StatusCode, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return apierr.New(apierr.UpstreamUnavailable, "the server's answer to %s %s is not the expected JSON: %v", method, path, err)
	}
	return nil
}

// serverExecution reads one execution from the server.
func (g *Gateway) serverExecution(ctx context.Context, token string, id int64) (api.Execution, error) {
	var ex api.Execution
	err := g.callServer(ctx, token, http.MethodGet, "/api/executions/"+strconv.FormatInt(id, 10), nil, &ex)
	return ex, err
}

// serverEventsAfter reads an execution's events after afterID from the
// server, in event-id order.
func (g *Gateway) serverEventsAfter(ctx context.Context, token string, id, afterID int64, limit int) ([]api.Event, error) {
	q := url.Values{}
	if afterID > 0 {
		q.Set("after", strconv.FormatInt(afterID, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/api/executions/" + strconv.FormatInt(id, 10) + "/events"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list api.EventList
	if err := g.callServer(ctx, token, http.MethodGet, path, nil, &list); err != nil {
		return nil, err
	}
	// The server filters by after; filtering again keeps this exact against
	// a server that does not know the parameter.
	out := list.Events[:0]
	for _, e := range list.Events {
		if e.EventID > afterID {
			out = append(out, e)
		}
	}
	return out, nil
}

// writeLiveJSON writes v as the JSON answer.
func writeLiveJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeLiveError writes err as the API's JSON error envelope.
func writeLiveError(w http.ResponseWriter, err error) {
	e, ok := apierr.As(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			e = apierr.New(apierr.Unavailable, "the request ended before the server answered: %v", err)
		} else {
			e = apierr.New(apierr.Internal, "%v", err)
		}
	}
	writeLiveJSON(w, e.Status(), apierr.Envelope{Error: e})
}

// newUUID is a random (version 4) UUID: request and client ids.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Request and client ids become NATS subjects and KV keys: nothing outside
// this alphabet may reach either (a "." or ">" would change the subject).
var (
	requestIDPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	clientIDPattern  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// gatewayVersion is the binary's module version (init frame's serverInfo).
func gatewayVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// publicURL is where playbooks reach this gateway: GATEWAY_PUBLIC_URL, else
// the address the caller used.
func (g *Gateway) publicURL(r *http.Request) string {
	if g.cfg.PublicURL != "" {
		return strings.TrimRight(g.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s", scheme, r.Host)
}

// updatesSubject is where the server publishes an execution's notes.
func (g *Gateway) updatesSubject(id int64) string {
	return g.cfg.UpdatesPrefix + strconv.FormatInt(id, 10)
}

// callbackSubject is where a request's callbacks fan out to every replica.
func (g *Gateway) callbackSubject(requestID string) string {
	return g.cfg.CallbackPrefix + "." + requestID
}
