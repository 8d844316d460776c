package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
)

// authReq sends one request with token (none if "") and returns the status,
// the body and the response.
func authReq(t *testing.T, h *servertest.Harness, token, method, path, body string) (int, []byte, *http.Response) {
	t.Helper()
	return sendWith(t, h, method, path, body, func(r *http.Request) {
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
	})
}

func sendWith(t *testing.T, h *servertest.Harness, method, path, body string, mod func(*http.Request)) (int, []byte, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.Srv.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	mod(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp
}

// envCode reads the code of a JSON error envelope ("" if it is not one).
func envCode(b []byte) string {
	var env apierr.Envelope
	if json.Unmarshal(b, &env) != nil || env.Error == nil {
		return ""
	}
	return string(env.Error.Code)
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("body %s: %v", b, err)
	}
}

// 401 without a token, 403 with the wrong role, and who-am-I for the right
// one: the guard's three answers, each a JSON envelope.
func TestGuardAnswers(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, servertest.WithAuth())
	viewer, admin := h.Token(t, api.RoleViewer), h.Token(t, api.RoleAdmin)

	code, b, resp := authReq(t, h, "", "GET", "/api/executions", "")
	if code != 401 || envCode(b) != "unauthenticated" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("no token: %d %s; want 401 unauthenticated JSON", code, b)
	}
	if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("401 without WWW-Authenticate: %v", resp.Header)
	}
	code, b, _ = authReq(t, h, viewer, "POST", "/api/execute", `{"path":"x"}`)
	if code != 403 || envCode(b) != "forbidden" || !strings.Contains(string(b), "admin, operator, worker") {
		t.Fatalf("viewer executes: %d %s; want 403 forbidden naming the roles that may", code, b)
	}
	code, b, _ = authReq(t, h, viewer, "GET", "/api/executions", "")
	if code != 200 {
		t.Fatalf("viewer lists executions: %d %s", code, b)
	}
	code, b, _ = authReq(t, h, admin, "GET", "/api/auth/whoami", "")
	var who api.WhoAmI
	mustJSON(t, b, &who)
	if code != 200 || who.Role != api.RoleAdmin || who.Kind != store.TokenAPI || who.TokenID == 0 || who.AuthDisabled {
		t.Fatalf("whoami: %d %s", code, b)
	}
	// Public routes need no token.
	for _, p := range []string{"/api/health", "/metrics", "/api/auth/config"} {
		if code, b, _ := authReq(t, h, "", "GET", p, ""); code != 200 {
			t.Errorf("GET %s without a token: %d %s", p, code, b)
		}
	}
	code, b, _ = authReq(t, h, "", "GET", "/api/auth/config", "")
	if code != 200 || !strings.Contains(string(b), `"auth":"tokens"`) || !strings.Contains(string(b), `"oidc":null`) {
		t.Errorf("auth config: %d %s", code, b)
	}
	// The other two places a token may travel.
	for name, set := range map[string]func(*http.Request){
		"X-Session-Token": func(r *http.Request) { r.Header.Set("X-Session-Token", admin) },
		"cookie":          func(r *http.Request) { r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: admin}) },
	} {
		if code, b, _ := sendWith(t, h, "GET", "/api/auth/whoami", "", set); code != 200 {
			t.Errorf("token in %s: %d %s", name, code, b)
		}
	}
	authReq(t, h, auth.NewSecret(store.TokenAPI), "GET", "/api/executions", "")
	_, b, _ = authReq(t, h, "", "GET", "/metrics", "")
	for _, reason := range []string{"missing", "invalid", "role"} {
		if !strings.Contains(string(b), `millrace_auth_denied_total{reason="`+reason+`"}`) {
			t.Errorf("/metrics has no millrace_auth_denied_total{reason=%q}", reason)
		}
	}
}

// With auth off every request passes as the open principal, and whoami
// says so.
func TestAuthOff(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, nil)
	code, b, _ := authReq(t, h, "", "GET", "/api/auth/whoami", "")
	var who api.WhoAmI
	mustJSON(t, b, &who)
	if code != 200 || !who.AuthDisabled {
		t.Fatalf("whoami with auth off: %d %s", code, b)
	}
	if code, b, _ := authReq(t, h, "", "GET", "/api/auth/config", ""); !bytes.Contains(b, []byte(`"auth":"none"`)) {
		t.Fatalf("config with auth off: %d %s", code, b)
	}
}

// Every start with MILLRACE_AUTH=none logs a warning; an unknown mode
// refuses to start.
func TestAuthModeAtStartup(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	servertest.StartWithLog(t, nil, logs)
	if !strings.Contains(logs.String(), "level=WARN msg=\"authentication is off (MILLRACE_AUTH=none)") {
		t.Fatalf("no WARN about auth being off in:\n%s", logs)
	}
	cfg := servertest.Config(t)
	cfg.Auth.Mode = "maybe"
	_, err := startErr(t, cfg)
	if err == nil || !strings.Contains(err.Error(), `MILLRACE_AUTH="maybe"`) {
		t.Fatalf("unknown mode: %v; want a startup error naming MILLRACE_AUTH", err)
	}
	cfg = servertest.Config(t)
	cfg.Auth.Mode = config.AuthTokens
	cfg.Auth.OIDCDefaultRole = api.RoleWorker
	if _, err := startErr(t, cfg); err == nil || !strings.Contains(err.Error(), "OIDC_DEFAULT_ROLE") {
		t.Fatalf("OIDC_DEFAULT_ROLE=worker: %v; want a startup error", err)
	}
}

// startErr runs server.New on cfg and closes what it opened.
func startErr(t *testing.T, cfg config.Server) (*server.Server, error) {
	t.Helper()
	srv, err := server.New(t.Context(), cfg, discardLog())
	if err == nil {
		srv.Close()
	}
	return srv, err
}

// A browser login with an API token: the reply and a cookie carry the
// session, which works until logout.
func TestLoginLogoutOverHTTP(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, servertest.WithAuth())
	admin := h.Token(t, api.RoleAdmin)
	code, b, _ := authReq(t, h, admin, "POST", "/api/tokens", `{"role":"operator","name":"ops"}`)
	var made api.TokenCreated
	mustJSON(t, b, &made)
	if code != 201 || !strings.HasPrefix(made.Secret, auth.APIPrefix) || made.Role != api.RoleOperator || made.CreatedBy == "" {
		t.Fatalf("create token: %d %s", code, b)
	}
	code, b, resp := authReq(t, h, "", "POST", "/api/auth/login", `{"api_token":"`+made.Secret+`"}`)
	var out api.LoginReply
	mustJSON(t, b, &out)
	if code != 200 || out.Status != "authenticated" || !strings.HasPrefix(out.SessionToken, auth.SessionPrefix) || out.User.Roles[0] != api.RoleOperator {
		t.Fatalf("login: %d %s", code, b)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != out.SessionToken || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Fatalf("login cookie: %+v", cookie)
	}
	if cookie.Secure {
		t.Errorf("cookie over plain HTTP is Secure: the browser would never send it back")
	}
	_, _, resp = sendWith(t, h, "POST", "/api/auth/login", `{"api_token":"`+made.Secret+`"}`, func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "https") })
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure {
		t.Errorf("cookie behind a TLS-terminating proxy: %v; want Secure", cs)
	}
	withCookie := func(r *http.Request) { r.AddCookie(cookie) }
	code, b, _ = sendWith(t, h, "GET", "/api/auth/whoami", "", withCookie)
	var who api.WhoAmI
	mustJSON(t, b, &who)
	if code != 200 || who.Kind != store.TokenSession || who.Role != api.RoleOperator || who.User.DisplayName != "ops" {
		t.Fatalf("whoami with the cookie: %d %s", code, b)
	}
	if code, b, _ := authReq(t, h, made.Secret, "POST", "/api/auth/logout", ""); code != 400 || envCode(b) != "bad_request" {
		t.Fatalf("logout with an API token: %d %s; want 400 (revoke it instead)", code, b)
	}
	code, b, resp = sendWith(t, h, "POST", "/api/auth/logout", "", withCookie)
	if code != 200 || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Fatalf("logout: %d %s %v; want 200 and the cookie cleared", code, b, resp.Cookies())
	}
	if code, b, _ := sendWith(t, h, "GET", "/api/auth/whoami", "", withCookie); code != 401 || envCode(b) != "unauthenticated" {
		t.Fatalf("whoami after logout: %d %s", code, b)
	}
	code, b, _ = authReq(t, h, admin, "GET", "/api/tokens", "")
	var list api.TokenList
	mustJSON(t, b, &list)
	if code != 200 || len(list.Tokens) != 2 || strings.Contains(string(b), made.Secret) || strings.Contains(string(b), auth.Hash(made.Secret)) {
		t.Fatalf("token list: %d %s; want the two API tokens, no secrets or hashes", code, b)
	}
	if code, b, _ := authReq(t, h, "", "POST", "/api/auth/login", `{"api_token":"`+h.Token(t, api.RoleWorker)+`"}`); code != 403 || envCode(b) != "forbidden" {
		t.Fatalf("worker login: %d %s; want 403", code, b)
	}
}

// OIDC login through the API against an issuer served in the test (its
// discovery document and JWKS; tokens signed here): a valid id_token opens a
// session; an expired one, one for another audience and one signed with
// another key each get 401 JSON.
func TestOIDCLoginOverHTTP(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	idp := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k", Algorithm: oidc.RS256}}}
	issuer := httptest.NewServer(idp)
	t.Cleanup(issuer.Close)
	idp.SetIssuer(issuer.URL)
	h := servertest.Start(t, servertest.WithAuth(func(c *config.Server) {
		c.Auth.OIDCIssuer, c.Auth.OIDCClientID = issuer.URL, "millrace"
	}))
	sign := func(k *rsa.PrivateKey, aud string, exp time.Time) string {
		c, _ := json.Marshal(map[string]any{"iss": issuer.URL, "aud": aud, "sub": "ada", "email": "ada@example.com",
			"roles": []string{"admin"}, "iat": exp.Add(-time.Hour).Unix(), "exp": exp.Unix()})
		return oidctest.SignIDToken(k, "k", oidc.RS256, string(c))
	}
	if code, b, _ := authReq(t, h, "", "GET", "/api/auth/config", ""); !strings.Contains(string(b), `"issuer":"`+issuer.URL+`","client_id":"millrace"`) {
		t.Fatalf("auth config: %d %s", code, b)
	}
	code, b, _ := authReq(t, h, "", "POST", "/api/auth/login", `{"id_token":"`+sign(key, "millrace", time.Now().Add(time.Hour))+`"}`)
	var out api.LoginReply
	mustJSON(t, b, &out)
	if code != 200 || out.User.UserID != "ada" || out.User.Roles[0] != api.RoleAdmin {
		t.Fatalf("valid id_token: %d %s", code, b)
	}
	if code, b, _ := authReq(t, h, out.SessionToken, "GET", "/api/tokens", ""); code != 200 {
		t.Fatalf("the OIDC admin session lists tokens: %d %s", code, b)
	}
	for name, tok := range map[string]string{
		"expired":         sign(key, "millrace", time.Now().Add(-time.Minute)),
		"wrong audience":  sign(key, "another-app", time.Now().Add(time.Hour)),
		"wrong signature": sign(other, "millrace", time.Now().Add(time.Hour)),
	} {
		code, b, resp := authReq(t, h, "", "POST", "/api/auth/login", `{"id_token":"`+tok+`"}`)
		if code != 401 || envCode(b) != "unauthenticated" || resp.Header.Get("Content-Type") != "application/json" || len(resp.Cookies()) != 0 {
			t.Errorf("%s id_token: %d %s; want 401 unauthenticated JSON and no cookie", name, code, b)
		}
	}
}
