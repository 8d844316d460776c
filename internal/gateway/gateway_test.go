package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/wait"
)

var testSeq atomic.Int64

// testConfig is a gateway's configuration for a test: the defaults, the
// given server and NATS, buckets of the test's own.
func testConfig(t testing.TB, serverURL, natsURL string) config.Gateway {
	t.Helper()
	var cfg config.Gateway
	config.GatewaySet(&cfg)
	id := fmt.Sprintf("%d_%d", time.Now().UnixNano(), testSeq.Add(1))
	cfg.NATS.URL = natsURL
	cfg.ServerURL = serverURL
	cfg.Addr = "127.0.0.1:0"
	cfg.SessionBucket = "sessions_" + id
	cfg.RequestBucket = "requests_" + id
	return cfg
}

// startGateway runs a gateway replica on a loopback port until the test ends.
func startGateway(t testing.TB, cfg config.Gateway) (*Gateway, *httptest.Server) {
	t.Helper()
	g, err := New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(g.Handler())
	t.Cleanup(func() { g.Close(); ts.Close() })
	return g, ts
}

// embeddedNATS is a NATS server of the test's own.
func embeddedNATS(t testing.TB) *bus.Embedded {
	t.Helper()
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	return emb
}

// deadURL is a URL nothing listens on.
func deadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// openUpstream is a fake server with auth off: whoami says so, and the
// rest is up to h.
func openUpstream(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/auth/whoami", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"kind": "none", "role": "admin", "auth_disabled": true, "user": map[string]any{"user_id": "anonymous", "roles": []string{"admin"}}})
	})
	mux.HandleFunc("/", h)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) errCode() apierr.Code {
	var env apierr.Envelope
	if json.Unmarshal(r.body, &env) != nil || env.Error == nil {
		return ""
	}
	return env.Error.Code
}

func do(t testing.TB, method, url string, body string, hdr map[string]string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

const goodOrigin = "http://localhost:5173"

// CORS headers are on every response for an allowed origin: 2xx, 404, a
// server's 500 passed through, and the gateway's own 502; never for a
// refused origin. Preflights answer 204 (allowed) or 403 JSON (refused).
func TestCORS(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	up := openUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/boom" {
			w.Header().Set("Access-Control-Allow-Origin", "https://evil.example") // must not leak through
			writeErr(w, apierr.New(apierr.Internal, "boom"))
			return
		}
		writeJSON(w, 200, map[string]string{"path": r.URL.Path})
	})
	_, gw := startGateway(t, testConfig(t, up.URL, emb.URL()))
	_, gwDead := startGateway(t, testConfig(t, deadURL(t), emb.URL()))

	cases := []struct {
		name, url string
		status    int
	}{
		{"2xx proxied", gw.URL + "/noetl/executions", 200},
		{"2xx health", gw.URL + "/health", 200},
		{"404", gw.URL + "/nothing/here", 404},
		{"500 from the server", gw.URL + "/noetl/boom", 500},
		{"502 server unreachable", gwDead.URL + "/noetl/executions", 502},
		{"503 health degraded", gwDead.URL + "/health", 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, "GET", c.url, "", map[string]string{"Origin": goodOrigin})
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if got := r.header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != goodOrigin {
				t.Errorf("Access-Control-Allow-Origin %q, want exactly %q", got, goodOrigin)
			}
			if got := r.header.Get("Access-Control-Allow-Credentials"); got != "true" {
				t.Errorf("Access-Control-Allow-Credentials %q, want true", got)
			}
			if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
				t.Errorf("Vary %q lacks Origin", r.header.Values("Vary"))
			}
			if c.status >= 400 && !strings.HasSuffix(c.url, "/health") && r.errCode() == "" {
				t.Errorf("error reply is not the JSON envelope: %s", r.body)
			}
			bad := do(t, "GET", c.url, "", map[string]string{"Origin": "https://evil.example"})
			if bad.status != c.status {
				t.Fatalf("refused origin: status %d, want %d", bad.status, c.status)
			}
			for k := range bad.header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("refused origin got %s: %q", k, bad.header.Get(k))
				}
			}
		})
	}

	t.Run("preflight allowed", func(t *testing.T) {
		r := do(t, "OPTIONS", gw.URL+"/noetl/execute", "", map[string]string{
			"Origin": "http://127.0.0.1:3000", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type"})
		if r.status != http.StatusNoContent {
			t.Fatalf("status %d, want 204: %s", r.status, r.body)
		}
		h := r.header
		if h.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:3000" || h.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("allow-origin %q credentials %q", h.Get("Access-Control-Allow-Origin"), h.Get("Access-Control-Allow-Credentials"))
		}
		for _, want := range []string{"POST", "DELETE"} {
			if !strings.Contains(h.Get("Access-Control-Allow-Methods"), want) {
				t.Errorf("Allow-Methods %q lacks %s", h.Get("Access-Control-Allow-Methods"), want)
			}
		}
		for _, want := range []string{"Authorization", "Content-Type", "X-Session-Token", "Last-Event-ID"} {
			if !strings.Contains(h.Get("Access-Control-Allow-Headers"), want) {
				t.Errorf("Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), want)
			}
		}
		if h.Get("Access-Control-Max-Age") == "" {
			t.Error("no Access-Control-Max-Age")
		}
	})
	t.Run("preflight refused", func(t *testing.T) {
		r := do(t, "OPTIONS", gw.URL+"/noetl/execute", "", map[string]string{
			"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
		if r.status != http.StatusForbidden || r.errCode() != apierr.Forbidden {
			t.Fatalf("status %d code %q, want 403 forbidden: %s", r.status, r.errCode(), r.body)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("refused preflight carries CORS headers: %v", r.header)
		}
	})
}

func TestCORSPolicy(t *testing.T) {
	t.Parallel()
	p, err := parseCORS(config.DefaultCORSOrigins + ", https://app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"http://localhost:5173":      true,
		"http://localhost":           true,
		"http://127.0.0.1:8080":      true,
		"https://localhost:8443":     true,
		"https://app.example.com":    true,
		"https://app.example.com:1":  false,
		"http://app.example.com":     false,
		"https://127.0.0.1:8080":     false,
		"http://localhost.evil.com":  false,
		"http://evil.com#localhost":  false,
		"null":                       false,
		"":                           false,
		"http://user@localhost:5173": false,
	} {
		got, creds := p.allow(origin)
		if (got != "") != want || (want && (got != origin || !creds)) {
			t.Errorf("allow(%q) = %q, %v; want allowed=%v", origin, got, creds, want)
		}
	}
	star, err := parseCORS("*")
	if err != nil {
		t.Fatal(err)
	}
	if got, creds := star.allow("https://anything.example"); got != "*" || creds {
		t.Errorf("lone *: allow = %q, %v; want *, no credentials", got, creds)
	}
	for _, bad := range []string{"localhost:3000", "ftp://x", "https://x/path", "http://:80"} {
		if _, err := parseCORS(bad); err == nil {
			t.Errorf("parseCORS(%q) accepted it", bad)
		}
	}
}

// The proxy streams: an SSE frame the server flushes reaches the client
// while the server's response is still open.
func TestProxyFlushesSSE(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	release := make(chan struct{})
	up := openUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/executions/7/stream" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: 1\nevent: playbook.started\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	_, gw := startGateway(t, testConfig(t, up.URL, emb.URL()))
	defer close(release)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", gw.URL+"/noetl/executions/7/stream", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("no frame while the server holds the stream open: %v", err)
	}
	if line != "id: 1\n" {
		t.Fatalf("first line %q", line)
	}
}

// The proxy sends the caller's token as Bearer whatever it came in
// (header, X-Session-Token or cookie), drops the cookie, keeps the path
// (escaped) and the query.
func TestProxyRequestShape(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	type seen struct {
		Path, RawPath, Query, Authorization, Cookie, SessionHeader string
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/auth/whoami" {
			writeJSON(w, 200, map[string]any{"token_id": 5, "kind": "api", "role": "operator", "user": map[string]any{"user_id": "u", "roles": []string{"operator"}}})
			return
		}
		writeJSON(w, 200, seen{r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Cookie"), r.Header.Get("X-Session-Token")})
	}))
	t.Cleanup(up.Close)
	_, gw := startGateway(t, testConfig(t, up.URL, emb.URL()))
	for name, hdr := range map[string]map[string]string{
		"bearer":  {"Authorization": "Bearer mrt_x"},
		"header":  {"X-Session-Token": "mrt_x"},
		"cookie":  {"Cookie": SessionCookie + "=mrt_x; other=1"},
		"lowcase": {"Authorization": "bearer mrt_x"},
	} {
		r := do(t, "GET", gw.URL+"/noetl/catalog/a%2Fb/c?version=2&x=%20", "", hdr)
		var s seen
		if r.status != 200 || json.Unmarshal(r.body, &s) != nil {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
		want := seen{Path: "/api/catalog/a/b/c", RawPath: "/api/catalog/a%2Fb/c", Query: "version=2&x=%20", Authorization: "Bearer mrt_x"}
		if s != want {
			t.Errorf("%s: the server saw %+v, want %+v", name, s, want)
		}
	}
}

// The UI is served under /ui/ with the proxy as its API; /ui redirects.
func TestUIMount(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	up := openUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/auth/config" {
			writeJSON(w, 200, map[string]any{"auth": "tokens", "oidc": map[string]string{"issuer": "https://idp.example", "client_id": "c"}})
			return
		}
		http.NotFound(w, r)
	})
	_, gw := startGateway(t, testConfig(t, up.URL, emb.URL()))
	r := do(t, "GET", gw.URL+"/ui/", "", nil)
	if r.status != 200 || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("/ui/: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "https://idp.example") {
		t.Errorf("CSP %q does not admit the server's OIDC issuer", csp)
	}
	r = do(t, "GET", gw.URL+"/ui/config.json", "", nil)
	var c struct {
		APIBase  string `json:"api_base"`
		AuthBase string `json:"auth_base"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &c) != nil || c.APIBase != "/noetl" || c.AuthBase != "/api/auth" {
		t.Fatalf("/ui/config.json: %d %s", r.status, r.body)
	}
	r = do(t, "GET", gw.URL+"/api/auth/config", "", nil)
	if r.status != 200 || !strings.Contains(string(r.body), "https://idp.example") {
		t.Errorf("/api/auth/config: %d %s", r.status, r.body)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", gw.URL+"/ui", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// /health needs no token and says what is wrong; /metrics has the
// gateway's series.
func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	up := openUpstream(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{}) })
	_, gw := startGateway(t, testConfig(t, up.URL, emb.URL()))
	r := do(t, "GET", gw.URL+"/health", "", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"status":"ok"`) {
		t.Fatalf("/health: %d %s", r.status, r.body)
	}
	up.Close()
	r = do(t, "GET", gw.URL+"/health", "", nil)
	if r.status != 503 || !strings.Contains(string(r.body), "SERVER_API_URL") {
		t.Fatalf("/health with the server down: %d %s", r.status, r.body)
	}
	emb.Shutdown()
	// The client notices the lost connection a moment after the shutdown.
	wait.For(t, 10*time.Second, func() error {
		r = do(t, "GET", gw.URL+"/health", "", nil)
		if r.status != 503 || !strings.Contains(string(r.body), `"nats":{"ok":false`) {
			return fmt.Errorf("/health with NATS down: %d %s", r.status, r.body)
		}
		return nil
	})
	r = do(t, "GET", gw.URL+"/metrics", "", nil)
	for _, want := range []string{"millrace_gateway_request_duration_seconds", `route="GET /health"`, "go_goroutines"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// Shutting down ends streams at once (clients resume with Last-Event-ID)
// and Serve returns well within the grace period.
func TestServeShutsDownWithOpenStream(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	up := openUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": open\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	g, err := New(t.Context(), testConfig(t, up.URL, emb.URL()), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", "http://"+ln.Addr().String()+"/noetl/executions/1/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(2 * shutdownGrace):
		t.Fatalf("Serve still running %v after shutdown began", 2*shutdownGrace)
	}
	if !g.nats.NC.IsClosed() {
		t.Error("Serve returned with the NATS connection still open")
	}
	if d := time.Since(start); d >= shutdownGrace {
		t.Errorf("shutdown took %v: the open stream held it for the whole grace period", d)
	}
	if _, err := io.ReadAll(resp.Body); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Logf("stream ended with %v", err)
	}
}

// A body over MILLRACE_MAX_BODY_BYTES is 413 through the proxy, whether
// its length is declared or it comes chunked; one within the limit arrives whole.
func TestProxyBodyLimit(t *testing.T) {
	t.Parallel()
	emb := embeddedNATS(t)
	up := openUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		writeJSON(w, 200, map[string]int{"got": len(b)})
	})
	cfg := testConfig(t, up.URL, emb.URL())
	cfg.MaxBodyBytes = 1000
	_, gw := startGateway(t, cfg)
	post := func(body io.Reader, length int64) reply {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", gw.URL+"/noetl/execute", body)
		req.ContentLength = length
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return reply{status: resp.StatusCode, header: resp.Header, body: b}
	}
	if r := post(strings.NewReader(strings.Repeat("a", 1000)), 1000); r.status != 200 || !strings.Contains(string(r.body), `"got":1000`) {
		t.Errorf("a body at the limit: %d %s", r.status, r.body)
	}
	if r := post(strings.NewReader(strings.Repeat("a", 1001)), 1001); r.status != 413 || r.errCode() != apierr.TooLarge {
		t.Errorf("a declared body over the limit: %d %s", r.status, r.body)
	}
	// -1: unknown length, sent chunked.
	if r := post(io.MultiReader(strings.NewReader(strings.Repeat("a", 5000))), -1); r.status != 413 || r.errCode() != apierr.TooLarge {
		t.Errorf("a chunked body over the limit: %d %s", r.status, r.body)
	}
}
