package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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
