package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

// authServer is a server with auth on and no lookup cache of its own, so
// that what the gateway answers from its cache is the gateway's doing.
func authServer(t *testing.T) *servertest.Harness {
	t.Helper()
	return servertest.Start(t, servertest.WithAuth(func(c *config.Server) { c.Auth.CacheTTL = 0 }))
}

// login logs in through the gateway with an API token and returns the
// session and the reply.
func login(t *testing.T, gwURL string, req api.LoginRequest) (api.LoginReply, reply) {
	t.Helper()
	b, _ := json.Marshal(req)
	r := do(t, "POST", gwURL+"/api/auth/login", string(b), map[string]string{"Content-Type": "application/json"})
	var out api.LoginReply
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
	}
	return out, r
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// cachedKeys lists the sessions bucket's keys.
func cachedKeys(t *testing.T, g *Gateway) []string {
	t.Helper()
	keys, err := g.sessions.Keys(t.Context())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// An API token logs in to a session: the reply has it, the cookie carries
// it (HttpOnly, SameSite=Strict), the sessions bucket caches it under the
// hash of the secret (never the secret), and the session then works from
// the cookie, X-Session-Token and Bearer, through the proxy too.
func TestLoginWithAPIToken(t *testing.T) {
	t.Parallel()
	h := authServer(t)
	g, gw := startGateway(t, testConfig(t, h.Srv.URL(), h.NATS.URL()))
	op := h.Token(t, api.RoleOperator)

	out, r := login(t, gw.URL, api.LoginRequest{APIToken: op})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	if out.Status != "authenticated" || !strings.HasPrefix(out.SessionToken, auth.SessionPrefix) || len(out.User.Roles) != 1 || out.User.Roles[0] != api.RoleOperator {
		t.Fatalf("login reply %+v", out)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == SessionCookie {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != out.SessionToken || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Fatalf("session cookie %+v", cookie)
	}
	if got := r.header.Values("Set-Cookie"); len(got) != 1 {
		t.Errorf("Set-Cookie %q: want the gateway's one cookie", got)
	}
	keys := cachedKeys(t, g)
	if len(keys) != 1 || keys[0] != auth.Hash(out.SessionToken) {
		t.Fatalf("sessions bucket keys %q, want only the session's hash", keys)
	}
	e, err := g.sessions.Get(t.Context(), keys[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value()), out.SessionToken) || strings.Contains(string(e.Value()), op) {
		t.Fatalf("the cached entry holds a secret: %s", e.Value())
	}

	for name, hdr := range map[string]map[string]string{
		"cookie":          {"Cookie": SessionCookie + "=" + out.SessionToken},
		"X-Session-Token": {"X-Session-Token": out.SessionToken},
		"Bearer":          bearer(out.SessionToken),
	} {
		r := do(t, "GET", gw.URL+"/api/auth/whoami", "", hdr)
		var who api.WhoAmI
		if r.status != 200 || json.Unmarshal(r.body, &who) != nil || who.Role != api.RoleOperator || who.Kind != store.TokenSession {
			t.Errorf("%s: whoami %d %s", name, r.status, r.body)
		}
		if r := do(t, "GET", gw.URL+"/noetl/executions", "", hdr); r.status != 200 {
			t.Errorf("%s: GET /noetl/executions %d %s", name, r.status, r.body)
		}
	}

	// A refused login is the server's 401, passed on.
	if _, r := login(t, gw.URL, api.LoginRequest{APIToken: "mrt_" + strings.Repeat("A", 43)}); r.status != 401 || r.errCode() != apierr.Unauthenticated {
		t.Errorf("login with an unknown token: %d %s", r.status, r.body)
	}
	if len(cachedKeys(t, g)) != 1 {
		t.Errorf("a refused login was cached: %q", cachedKeys(t, g))
	}
}

// A forged session, a made-up token, an expired session and an expired
// API token are all 401 JSON with the same message; nothing is cached for them.
func TestForgedAndExpiredSession(t *testing.T) {
	t.Parallel()
	h := authServer(t)
	g, gw := startGateway(t, testConfig(t, h.Srv.URL(), h.NATS.URL()))
	op := h.Token(t, api.RoleOperator)

	// A session of about a second, and an API token that expires as soon.
	short, r := login(t, gw.URL, api.LoginRequest{APIToken: op, SessionDurationHours: 1.5 / 3600})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	soon := time.Now().Add(1500 * time.Millisecond)
	tok, err := auth.CreateToken(t.Context(), h.Srv.Store(), h.Srv.IDs(), api.RoleOperator, "short", "test", &soon)
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, "GET", gw.URL+"/api/auth/whoami", "", bearer(tok.Secret)); r.status != 200 {
		t.Fatalf("the short token before it expires: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", gw.URL+"/api/auth/whoami", "", bearer(short.SessionToken)); r.status != 200 {
		t.Fatalf("the short session before it expires: %d %s", r.status, r.body)
	}

	var msg string
	check := func(name string, hdr map[string]string) {
		t.Helper()
		for _, path := range []string{"/api/auth/whoami", "/noetl/executions"} {
			r := do(t, "GET", gw.URL+path, "", hdr)
			var env apierr.Envelope
			if r.status != 401 || json.Unmarshal(r.body, &env) != nil || env.Error == nil || env.Error.Code != apierr.Unauthenticated {
				t.Errorf("%s %s: %d %s, want 401 unauthenticated JSON", name, path, r.status, r.body)
				continue
			}
			if r.header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: Content-Type %q", name, path, r.header.Get("Content-Type"))
			}
			if msg == "" {
				msg = env.Error.Message
			} else if env.Error.Message != msg {
				t.Errorf("%s %s: message %q differs from %q: it must not tell the cases apart", name, path, env.Error.Message, msg)
			}
		}
	}
	check("no token", nil)
	check("forged session", bearer(auth.NewSecret(store.TokenSession)))
	check("forged session cookie", map[string]string{"Cookie": SessionCookie + "=" + auth.NewSecret(store.TokenSession)})
	check("made-up API token", bearer(auth.NewSecret(store.TokenAPI)))
	check("not a token", map[string]string{"X-Session-Token": "hello"})
	check("not Bearer", map[string]string{"Authorization": "Basic " + op})
	wait.Until(t, 30*time.Second, "the short session and token expire", func() bool { return time.Now().After(soon.Add(100 * time.Millisecond)) })
	check("expired session", bearer(short.SessionToken))
	check("expired API token", bearer(tok.Secret))
	for _, k := range cachedKeys(t, g) {
		if k != auth.Hash(short.SessionToken) && k != auth.Hash(tok.Secret) {
			t.Errorf("a refused token was cached: %s", k)
		}
	}
}

// A session revoked in the database still works on the gateway's own
// routes from its cache until NATS_SESSION_CACHE_TTL_SECS passes, then it
// is 401. A proxied call is checked by the server, which holds the truth:
// its 401 also drops the cached copy at once.
func TestSessionCacheExpiry(t *testing.T) {
	t.Parallel()
	h := authServer(t)
	cfg := testConfig(t, h.Srv.URL(), h.NATS.URL())
	cfg.SessionCacheTTL = 2 * time.Second
	g, gw := startGateway(t, cfg)
	revoke := func(secret string) {
		t.Helper()
		st := h.Srv.Store()
		row, err := store.ReadValue(t.Context(), st, func(q store.Querier) (store.AuthToken, error) {
			return q.AuthTokenByHash(t.Context(), auth.Hash(secret))
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Do(t.Context(), 0, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.AuthTokenRevoke(ctx, row.ID, time.Now().UTC())
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	viewer := h.Token(t, api.RoleViewer)

	out, r := login(t, gw.URL, api.LoginRequest{APIToken: viewer})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	cachedAt := time.Now() // login cached it; the entry is at most this old
	sess := bearer(out.SessionToken)
	revoke(out.SessionToken) // behind the gateway's back, straight in the store
	r = do(t, "GET", gw.URL+"/api/auth/whoami", "", sess)
	if time.Since(cachedAt) < cfg.SessionCacheTTL && r.status != 200 {
		t.Fatalf("within the cache TTL the cached session should still answer: %d %s", r.status, r.body)
	}
	wait.For(t, 30*time.Second, func() error {
		r := do(t, "GET", gw.URL+"/api/auth/whoami", "", sess)
		if r.status == 401 && r.errCode() == apierr.Unauthenticated {
			return nil
		}
		return fmt.Errorf("whoami still %d", r.status)
	})
	if age := time.Since(cachedAt); age < cfg.SessionCacheTTL-100*time.Millisecond {
		t.Errorf("the cached session was refused after %v, before the TTL %v", age, cfg.SessionCacheTTL)
	}

	// The server's 401 on a proxied call drops the cached copy at once.
	out, r = login(t, gw.URL, api.LoginRequest{APIToken: viewer})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	sess = bearer(out.SessionToken)
	revoke(out.SessionToken)
	if r := do(t, "GET", gw.URL+"/noetl/executions", "", sess); r.status != 401 {
		t.Fatalf("the server accepts a revoked session: %d %s", r.status, r.body)
	}
	for _, k := range cachedKeys(t, g) {
		if k == auth.Hash(out.SessionToken) {
			t.Fatal("the session the server refused is still cached")
		}
	}
	if r := do(t, "GET", gw.URL+"/api/auth/whoami", "", sess); r.status != 401 {
		t.Errorf("whoami after the server refused the session: %d %s", r.status, r.body)
	}
}

// Logging out through one replica ends the session on every replica at
// once: they share the sessions bucket and cache nothing of their own.
func TestLogoutAcrossReplicas(t *testing.T) {
	t.Parallel()
	h := authServer(t)
	cfg := testConfig(t, h.Srv.URL(), h.NATS.URL()) // one NATS, one set of buckets
	a, gwA := startGateway(t, cfg)
	b, gwB := startGateway(t, cfg)
	out, r := login(t, gwA.URL, api.LoginRequest{APIToken: h.Token(t, api.RoleOperator)})
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	sess := bearer(out.SessionToken)
	hits := func(g *Gateway) float64 { return counterValue(t, g, "millrace_gateway_session_lookups_total", "hit") }
	before := hits(b)
	if r := do(t, "GET", gwB.URL+"/api/auth/whoami", "", sess); r.status != 200 {
		t.Fatalf("replica B: %d %s", r.status, r.body)
	}
	if hits(b) != before+1 {
		t.Fatalf("replica B did not answer from the session A cached")
	}

	r = do(t, "POST", gwA.URL+"/noetl/auth/logout", "", sess) // the UI's way, through the proxy prefix
	if r.status != 200 {
		t.Fatalf("logout through A: %d %s", r.status, r.body)
	}
	if c := (&http.Response{Header: r.header}).Cookies(); len(c) != 1 || c[0].Name != SessionCookie || c[0].MaxAge >= 0 {
		t.Errorf("logout cookies %+v: want the session cookie cleared", c)
	}
	if keys := cachedKeys(t, a); len(keys) != 0 {
		t.Errorf("sessions bucket after logout: %q", keys)
	}
	for name, gw := range map[string]string{"A": gwA.URL, "B": gwB.URL} {
		if r := do(t, "GET", gw+"/api/auth/whoami", "", sess); r.status != 401 {
			t.Errorf("replica %s after logout: %d %s", name, r.status, r.body)
		}
	}
	// An API token is not ended by a logout: the server says so.
	op := h.Token(t, api.RoleOperator)
	if r := do(t, "POST", gwB.URL+"/api/auth/logout", "", bearer(op)); r.status != 400 {
		t.Errorf("logout with an API token: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", gwA.URL+"/api/auth/whoami", "", bearer(op)); r.status != 200 {
		t.Errorf("the API token after a refused logout: %d %s", r.status, r.body)
	}
}

// The gateway enforces the role before forwarding: a viewer's write never
// reaches the server (403 forbidden naming the roles), its reads and
// metric queries pass; the server holds the rest of the matrix.
func TestProxyRoleEnforcement(t *testing.T) {
	t.Parallel()
	h := authServer(t)
	g, gw := startGateway(t, testConfig(t, h.Srv.URL(), h.NATS.URL()))
	viewer, op := bearer(h.Token(t, api.RoleViewer)), bearer(h.Token(t, api.RoleOperator))
	body := `{"path": "test/none"}`

	r := do(t, "POST", gw.URL+"/noetl/execute", body, viewer)
	if r.status != 403 || r.errCode() != apierr.Forbidden || !strings.Contains(string(r.body), "operator") {
		t.Fatalf("viewer POST /noetl/execute: %d %s, want 403 forbidden naming the roles that may", r.status, r.body)
	}
	if got := counterValue(t, g, "millrace_gateway_proxy_requests_total", "ok"); got != 0 {
		t.Errorf("the viewer's write reached the server (%v proxied)", got)
	}
	for _, c := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
	}{
		{"viewer reads", "GET", "/noetl/executions", "", viewer, 200},
		{"viewer deletes", "DELETE", "/noetl/credentials/x", "", viewer, 403},
		{"operator executes (unknown playbook)", "POST", "/noetl/execute", body, op, 404},
		{"operator makes a token (the server refuses)", "POST", "/noetl/tokens", `{"role": "viewer"}`, op, 403},
		{"no token", "GET", "/noetl/executions", "", nil, 401},
	} {
		r := do(t, c.method, gw.URL+c.path, c.body, c.hdr)
		if r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, r.status, r.body, c.status)
		}
	}
	// A viewer's metric query passes the gateway (the server decides: here,
	// the project does not exist).
	r = do(t, "POST", gw.URL+"/noetl/v2/projects/nope/query/metric-query", `{}`, viewer)
	if r.status == 401 || r.status == 403 {
		t.Errorf("viewer metric query: %d %s", r.status, r.body)
	}
}

// counterValue reads one series of a gateway counter from its registry.
func counterValue(t *testing.T, g *Gateway, name, label string) float64 {
	t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
