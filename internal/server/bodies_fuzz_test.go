package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/server/servertest"
)

// fuzzRoutes is every route that reads a JSON body, with ids that exist
// (a registered playbook, a project) or plausibly could.
var fuzzRoutes = []string{
	"POST /api/catalog/register",
	"POST /api/execute",
	"POST /api/commands/claim",
	"POST /api/commands/1/claim",
	"POST /api/commands/1/release",
	"POST /api/events",
	"POST /api/events/batch",
	"POST /api/executions/1/cancel",
	"POST /api/credentials",
	"POST /api/tokens",
	"POST /api/auth/login",
	"POST /api/v2/projects",
	"POST /api/v2/projects/p/models",
	"POST /api/v2/projects/p/query/sql",
	"POST /api/v2/projects/p/query/metric-query",
	"POST /api/v2/projects/p/query/q/cancel",
	"POST /api/v2/projects/p/preaggregates/m/n/refresh",
	"POST /api/v2/internal/queries/q/claim",
	"POST /api/v2/internal/queries/q/heartbeat",
	"POST /api/v2/internal/queries/q/fail",
	"POST /api/v2/internal/queries/q/fallback",
	"POST /api/v2/internal/preaggregates/builds/b/claim",
	"POST /api/v2/internal/preaggregates/builds/b/heartbeat",
	"POST /api/v2/internal/preaggregates/builds/b/complete",
	"POST /api/v2/internal/preaggregates/builds/b/fail",
}

// Every JSON request body, through the real handlers and store: whatever
// the bytes, the answer is a JSON 2xx or 4xx, never a 5xx (a NUL, a huge
// number, a wrong type or a deep nesting included), and the server keeps
// answering.
func FuzzAPIBodies(f *testing.F) {
	h := servertest.Start(f, nil)
	base := h.Srv.URL()
	post := func(path, body string) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			f.Fatal(err)
		}
		resp.Body.Close()
	}
	post("/api/catalog/register", `{"content":`+jsonString(oneStep)+`}`)
	post("/api/v2/projects", `{"name":"p","warehouse":{"type":"postgres","url":"postgres://app:pw@127.0.0.1:1/db"}}`)

	seeds := []string{
		`{}`, ``, `null`, `[]`, `{"path":"t/one"}`, `{"path":"t/one","payload":{"n":1e309}}`,
		`{"path":"t/one","version":99999999999999999999}`, `{"worker_id":"w","commands":[{"event_id":1}]}`,
		`{"event_type":"command.completed","event_id":1,"worker_id":"w","attempt":1,"result":{"a":1}}`,
		`{"events":[{"event_type":"command.failed","event_id":-1,"error":{"kind":"x","message":"m"}}]}`,
		`{"name":"c","kind":"postgres","data":{"password":"\u0000"}}`, `{"sql":"select 1","context":"x"}`,
		`{"exploreName":"m","dimensions":["a"],"metrics":[],"filters":{},"sorts":[],"limit":-1}`,
		`{"content":"apiVersion: noetl.io/v2\nkind: Playbook\n"}`, `{"role":"admin","name":"x","ttl":"1h"}`,
	}
	for i := range fuzzRoutes {
		f.Add(uint8(i), []byte(`{}`))
		f.Add(uint8(i), []byte(seeds[i%len(seeds)]))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		method, path, _ := strings.Cut(fuzzRoutes[int(route)%len(fuzzRoutes)], " ")
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, resp.StatusCode, data)
		}
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusNoContent && !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s %q: %d with Content-Type %q", method, path, body, resp.StatusCode, ct)
		}
	})
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
