package cli

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/server/servertest"
)

// execute --idempotency-key: a rerun with the key returns the first
// execution; a failed submit names the key to rerun with.
func TestExecuteIdempotencyKey(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, nil)
	if _, err := h.API.Register(t.Context(), "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata:\n  name: k\n  path: t/k\nworkflow:\n  - step: start\n    tool:\n      kind: noop\n"); err != nil {
		t.Fatal(err)
	}
	code, first, stderr := runCLI(t, "execute", "t/k", "--idempotency-key", "cli-key-1", "--server", h.Srv.URL())
	if code != 0 || !strings.HasPrefix(first, "execution ") {
		t.Fatalf("execute = %d %q %q", code, first, stderr)
	}
	code, again, stderr := runCLI(t, "execute", "t/k", "--idempotency-key", "cli-key-1", "--server", h.Srv.URL())
	if code != 0 || strings.Fields(again)[1] != strings.Fields(first)[1] {
		t.Fatalf("rerun with the key = %d %q %q, want execution %s again", code, again, stderr, strings.Fields(first)[1])
	}
	page, err := h.API.ExecutionsFiltered(t.Context(), 1, 10, "", "t/k")
	if err != nil || page.Total != 1 {
		t.Fatalf("%d executions, %v; want 1", page.Total, err)
	}

	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":{"code":"internal","message":"boom"}}`))
	}))
	t.Cleanup(broken.Close)
	code, _, stderr = runCLI(t, "execute", "t/k", "--idempotency-key", "cli-key-2", "--server", broken.URL)
	if code == 0 || !strings.Contains(stderr, "--idempotency-key cli-key-2") {
		t.Fatalf("a failed submit = %d %q, want the key to rerun with", code, stderr)
	}
}
