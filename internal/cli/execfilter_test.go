package cli

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
)

// `millrace executions list --status S --path P` sends both filters to
// GET /api/executions.
func TestExecutionsListFilters(t *testing.T) {
	var mu sync.Mutex
	var got url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.URL.Query()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"executions":[],"page":1,"page_size":50,"total":0}`))
	}))
	t.Cleanup(srv.Close)
	t.Setenv("MILLRACE_DATA_DIR", t.TempDir())
	t.Setenv("SERVER_API_URL", "")
	t.Setenv(tokenEnv, "")
	code, stdout, stderr := runCLI(t, "executions", "list", "--server", srv.URL, "--status", "failed", "--path", "etl/*")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.Get("status") != "failed" || got.Get("path") != "etl/*" || got.Get("page") != "1" {
		t.Fatalf("query %v; want status=failed, path=etl/*, page=1", got)
	}
}
