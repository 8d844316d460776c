package ui_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/gateway"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/worker/commands"
)

const quickPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: quick, path: ui/quick}
workload: {gate: /nonexistent}
workflow:
  - step: start
    desc: Runs until the browser test, having seen it running, creates the gate file (2 minutes at most)
    tool: {kind: shell, cmds: ["i=0; until [ -f '{{ gate }}' ] || [ $i -ge 1200 ]; do sleep 0.1; i=$((i+1)); done; echo hello"]}
    next: {arcs: [{step: done}]}
  - step: done
    tool: {kind: noop, result: {greeting: "{{ start.data.stdout }}"}}
`

const longPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: long, path: ui/long}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["sleep 120"]}
    next: {arcs: [{step: never}]}
  - step: never
    tool: {kind: noop}
`

// TestUIInBrowser drives Debian's chromium (playwright-core from
// internal/ui/browsertest) through the UI of a real server with a commands
// worker and a PostgreSQL warehouse, authentication on: sign in with an
// admin token, run an execution and see it
// complete without a reload, cancel a long one, page through a query's
// results, and screenshot every page (into MILLRACE_SCREENSHOT_DIR if set).
// It runs twice: on the server's /ui/, and on a gateway's /ui/ (the API
// through its /noetl proxy, logins at its /api/auth).
func TestUIInBrowser(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: run .ci/run's install step (apt-get install -y nodejs npm chromium)")
	}
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatal("chromium is not installed at /usr/bin/chromium: run .ci/run's install step (apt-get install -y chromium)")
	}
	dir, _ := filepath.Abs("browsertest")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run `npm ci` in %s (.ci/run does)", dir)
	}
	shots := os.Getenv("MILLRACE_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}

	issuer := newIssuer(t)
	h := servertest.Start(t, servertest.WithAuth(func(c *config.Server) {
		c.Query.ResultsDir = t.TempDir()
		c.Auth.OIDCIssuer, c.Auth.OIDCClientID = issuer, oidcClientID
	}))
	ctx := t.Context()
	admin := h.Token(t, api.RoleAdmin)
	c := h.API.WithToken(admin)
	w, err := commands.New(ctx, config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: "ui-worker-" + h.Cfg.NATS.Consumer,
		Concurrency: 4, ShutdownGrace: 5 * time.Second, Token: h.Token(t, api.RoleWorker)}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })

	for _, pb := range []string{quickPlaybook, longPlaybook} {
		if _, err := c.Register(ctx, pb); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.ProjectPut(ctx, "wh", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CredentialPut(ctx, api.Credential{Name: "warehouse_pg", Kind: "postgres", Description: "shown by name and kind only",
		Data: map[string]any{"password": "never-in-the-ui"}}); err != nil {
		t.Fatal(err)
	}

	// The gateway serves the same UI at /ui/ over its /noetl proxy, with
	// logins at its own /api/auth.
	gcfg := config.Gateway{}
	config.GatewaySet(&gcfg)
	gcfg.NATS.URL, gcfg.ServerURL, gcfg.Addr = h.Cfg.NATS.URL, h.Srv.URL(), "127.0.0.1:0"
	gcfg.SessionBucket, gcfg.RequestBucket = "ui_sessions_"+h.Cfg.NATS.Consumer, "ui_requests_"+h.Cfg.NATS.Consumer
	gw, err := gateway.New(ctx, gcfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	gts := httptest.NewServer(gw.Handler())
	t.Cleanup(func() { gw.Close(); gts.Close() })

	viewer := h.Token(t, api.RoleViewer)
	// SSO is tried on the server only: the gateway does not answer
	// /api/auth/config, so its login page offers tokens alone.
	for _, through := range []struct{ name, url, oidc string }{{"server", h.Srv.URL(), "1"}, {"gateway", gts.URL, ""}} {
		dir := filepath.Join(shots, through.name)
		got := runBrowser(t, node, chromium, through.url, admin, viewer, dir, "OIDC="+through.oidc)
		t.Logf("through the %s: %+v; screenshots in %s", through.name, got, dir)
		if through.oidc != "" && !strings.Contains(got.SSO, "operator") {
			t.Fatalf("after SSO the page showed %q, want an operator", got.SSO)
		}
		// The ids the page showed are exact 64-bit ids of the store's executions.
		for id, want := range map[string]api.ExecStatus{got.QuickID: api.ExecCompleted, got.Second: api.ExecCompleted, got.LongID: api.ExecCancelled} {
			n, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				t.Fatalf("the page showed execution id %q: %v", id, err)
			}
			ex, err := c.Execution(ctx, n)
			if err != nil {
				t.Fatalf("execution %s, as the page showed it: %v", id, err)
			}
			if ex.Status != want {
				t.Fatalf("execution %s is %s, want %s", id, ex.Status, want)
			}
		}
		for _, name := range []string{"02-execution-completed.png", "05-execution-cancelled.png", "06-query-last-page.png", "08-workers-streams.png", "11-viewer.png"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() < 1000 {
				t.Fatalf("screenshot %s: %v", name, err)
			}
		}
	}
}

type browserReport struct {
	QuickID string            `json:"quick_id"`
	Second  string            `json:"second_id"`
	LongID  string            `json:"long_id"`
	SSO     string            `json:"sso"` // who the SSO login showed, when OIDC=1
	Live    map[string]string `json:"live"`
}

// runBrowser runs ui.mjs against base and returns what it reports.
func runBrowser(t *testing.T, node, chromium, base, admin, viewer, shots string, env ...string) browserReport {
	t.Helper()
	runCtx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(runCtx, node, "ui.mjs")
	cmd.Dir, _ = filepath.Abs("browsertest")
	cmd.Env = append(os.Environ(), "BASE_URL="+base, "TOKEN="+admin, "VIEWER_TOKEN="+viewer, "SCREENSHOT_DIR="+shots,
		"QUICK_PATH=ui/quick", "LONG_PATH=ui/long", "PROJECT=wh", "CHROMIUM="+chromium, "REQUIRE_SSE=1")
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	t.Logf("browser log (%s):\n%s", base, stderr.String())
	if err != nil {
		t.Fatalf("the browser test against %s failed (%v); screenshots in %s", base, err, shots)
	}
	var got browserReport
	lines := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("the browser test's report %q: %v", stdout, err)
	}
	return got
}

const oidcClientID = "millrace-ui"

// newIssuer serves an OIDC issuer for the SSO button: discovery and keys
// (oidctest), and an authorization endpoint that signs in "ada" at once,
// as an operator, and sends the browser back with #id_token=...&state=...
// (the implicit flow), the page's nonce in the token.
func newIssuer(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	o := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: oidc.RS256}}}
	var url string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*") // the page reads the discovery document
		if r.URL.Path != "/auth" {
			o.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		if q.Get("response_type") != "id_token" || q.Get("client_id") != oidcClientID || q.Get("nonce") == "" || q.Get("state") == "" {
			http.Error(w, "want response_type=id_token, client_id, nonce and state: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		claims, _ := json.Marshal(map[string]any{"iss": url, "aud": oidcClientID, "sub": "ada", "email": "ada@example.com", "name": "Ada",
			"roles": []string{"operator"}, "nonce": q.Get("nonce"), "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
		tok := oidctest.SignIDToken(key, "k1", oidc.RS256, string(claims))
		http.Redirect(w, r, q.Get("redirect_uri")+"#id_token="+tok+"&state="+q.Get("state"), http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	url = srv.URL
	o.SetIssuer(url)
	return url
}
