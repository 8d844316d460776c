package ui_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/ui"
)

func get(t *testing.T, h http.Handler, path string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

// The handler serves the embedded files, its config as JSON, index.html
// for routes of the app, 404 for missing assets, and revalidation by ETag.
func TestHandler(t *testing.T) {
	t.Parallel()
	h := ui.Handler(ui.Config{APIBase: "/noetl/", Title: "Gateway", OIDCIssuer: "https://issuer.example/realms/x"})

	res := get(t, h, "/ui/config.json", nil)
	var cfg ui.Config
	if err := json.NewDecoder(res.Body).Decode(&cfg); err != nil || res.StatusCode != 200 {
		t.Fatalf("config.json: %d %v", res.StatusCode, err)
	}
	if cfg.APIBase != "/noetl" || cfg.EventsBase != "/noetl" || cfg.AuthBase != "/noetl/auth" || cfg.Title != "Gateway" {
		t.Fatalf("config = %+v; want api and events base /noetl, auth base /noetl/auth, title Gateway", cfg)
	}

	for path, want := range map[string]string{
		"/ui/":              "text/html",
		"/ui/index.html":    "text/html",
		"/ui/js/app.js":     "text/javascript",
		"/ui/js/api.js":     "text/javascript",
		"/ui/style.css":     "text/css",
		"/ui/executions/12": "text/html", // not a file: the app
	} {
		res := get(t, h, path, nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), want) || len(body) == 0 {
			t.Errorf("%s: %d %q, %d bytes; want 200 %s", path, res.StatusCode, res.Header.Get("Content-Type"), len(body), want)
		}
		csp := res.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self' https://issuer.example") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: headers %v", path, res.Header)
		}
	}
	if res := get(t, h, "/ui/js/missing.js", nil); res.StatusCode != 404 {
		t.Errorf("a missing asset: %d, want 404", res.StatusCode)
	}
	res = get(t, h, "/ui/js/app.js", nil)
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if res := get(t, h, "/ui/js/app.js", map[string]string{"If-None-Match": etag}); res.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", res.StatusCode)
	}
	r := httptest.NewRequest(http.MethodPost, "/ui/", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", w.Code)
	}
	// Defaults: the server's API.
	res = get(t, ui.Handler(ui.Config{}), "/ui/config.json", nil)
	_ = json.NewDecoder(res.Body).Decode(&cfg)
	if cfg.APIBase != "/api" || cfg.Title != "Millrace" {
		t.Fatalf("default config = %+v", cfg)
	}
}

// The page's JSON parser keeps 64-bit ids exact (run in node: the same
// module the browser loads).
func TestParseJSON(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: run .ci/run's install step (apt-get install -y nodejs npm chromium)")
	}
	out, err := exec.Command(node, "browsertest/json.test.mjs").CombinedOutput()
	if err != nil {
		t.Fatalf("json.test.mjs: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
}
