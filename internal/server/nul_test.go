package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A NUL character anywhere a client can put a string (a JSON body, a path,
// a query parameter) is a 400 nul_character naming where it is, never the
// store's 500; the server keeps serving.
func TestNULIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg, _ := json.Marshal(map[string]string{"content": oneStep})
	if code, body := b.raw("POST", "/api/catalog/register", reg); code != http.StatusOK {
		t.Fatalf("register: %d %v", code, body)
	}
	cases := []struct {
		name, method, path, body, where string
	}{
		{"execute payload", "POST", "/api/execute", `{"path":"t/one","payload":{"greeting":"a\u0000b"}}`, "$.payload.greeting"},
		{"execute path", "POST", "/api/execute", `{"path":"t/\u0000one"}`, "$.path"},
		{"payload key", "POST", "/api/execute", `{"path":"t/one","payload":{"k\u0000":1}}`, "a key"},
		{"credential", "POST", "/api/credentials", `{"name":"pg","kind":"postgres","data":{"password":"x\u0000"}}`, "$.data.password"},
		{"claim", "POST", "/api/commands/1/claim", `{"worker_id":"w\u0000"}`, "$.worker_id"},
		{"claim batch", "POST", "/api/commands/claim", `{"worker_id":"w","commands":[{"event_id":1,"worker_id":"\u0000"}]}`, ""},
		{"register", "POST", "/api/catalog/register", `{"content":"a\u0000"}`, "$.content"},
		{"path param", "GET", "/api/catalog/t/one%00x", ``, "path"},
		{"query param", "GET", "/api/executions?path=a%00b", ``, `"path"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := b.raw(c.method, c.path, []byte(c.body))
			if code == http.StatusOK || code >= 500 {
				t.Fatalf("got %d %v, want a 4xx", code, body)
			}
			if c.where == "" { // an unknown field may be refused first
				return
			}
			if code != http.StatusBadRequest || errCode(body) != "nul_character" || !strings.Contains(errMsg(body), c.where) {
				t.Fatalf("got %d %v, want 400 nul_character naming %s", code, body, c.where)
			}
		})
	}
	ex, _ := json.Marshal(map[string]any{"path": "t/one", "payload": map[string]string{"greeting": `\u0000 is fine escaped`}})
	if code, body := b.raw("POST", "/api/execute", ex); code != http.StatusOK {
		t.Fatalf("an escaped backslash is not a NUL: %d %v", code, body)
	}
	if code, body := b.raw("GET", "/api/health", nil); code != http.StatusOK {
		t.Fatalf("health after the NULs: %d %v", code, body)
	}
}
