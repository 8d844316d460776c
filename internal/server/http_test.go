package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A wrong method on a known path is a JSON 405 naming the methods the path
// takes; a path no route knows stays a JSON 404.
func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"DELETE", "/api/executions/1", 405, "method_not_allowed", "GET, HEAD"},
		{"POST", "/api/executions/1", 405, "method_not_allowed", "GET, HEAD"},
		{"GET", "/api/execute", 405, "method_not_allowed", "POST"},
		{"PUT", "/api/catalog/register", 405, "method_not_allowed", "GET, HEAD, POST"}, // GET is /api/catalog/{path...}
		{"GET", "/api/executions/1/cancel", 405, "method_not_allowed", "POST"},
		{"GET", "/api/events", 405, "method_not_allowed", "POST"},
		{"DELETE", "/api/commands/7/claim", 405, "method_not_allowed", "POST"},
		{"POST", "/api/health", 405, "method_not_allowed", "GET, HEAD"},
		{"PUT", "/api/credentials/pg", 405, "method_not_allowed", "GET, HEAD, DELETE"},
		{"DELETE", "/api/v2/projects", 405, "method_not_allowed", "GET, HEAD, POST"},
		{"GET", "/api/v2/projects/p/query/q1/cancel", 405, "method_not_allowed", "POST"},
		{"PATCH", "/api/v2/projects/p/query/q1/results", 405, "method_not_allowed", "GET, HEAD"},
		{"POST", "/metrics", 405, "method_not_allowed", "GET, HEAD"},
		{"GET", "/api/nope", 404, "not_found", ""},
		{"POST", "/api/executions/1/nope", 404, "not_found", ""},
		{"DELETE", "/", 404, "not_found", ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, b.base+tc.path, strings.NewReader(`{}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("response is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status || errCode(body) != tc.code {
				t.Fatalf("got %d %v, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if !strings.Contains(errMsg(body), tc.path) {
				t.Errorf("message %q does not name the path", errMsg(body))
			}
		})
	}
}
