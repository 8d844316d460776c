package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// idemPost sends body to path with an Idempotency-Key (none when key is
// nil) and returns the status, the raw body and whether it was a replay.
func idemPost(t *testing.T, base, path string, key *string, body string) (int, []byte, bool) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != nil {
		req.Header.Set("Idempotency-Key", *key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil, false
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header.Get("Idempotent-Replayed") == "true"
}

func ptr(s string) *string { return &s }

// A repeated Idempotency-Key returns the first execution, byte for byte,
// marked Idempotent-Replayed; another request with the key is 422;
// concurrent submits of one key make one execution; bad keys are 400. On
// both drivers.
func TestIdempotentExecute(t *testing.T) {
	t.Parallel()
	for _, drv := range []string{"sqlite", "postgres"} {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			h := servertest.Start(t, func(c *config.Server) {
				if drv == "postgres" {
					c.DatabaseURL = pgtest.NewSchema(t)
				}
			})
			ctx := t.Context()
			for _, p := range []string{"first", "keyless", "bad", "raced"} {
				if _, err := h.API.Register(ctx, strings.Replace(oneStep, "path: t/one", "path: t/"+p, 1)); err != nil {
					t.Fatal(err)
				}
			}
			base := h.Srv.URL()
			// count is how many executions of t/<path> exist.
			count := func(path string) int64 {
				t.Helper()
				page, err := h.API.ExecutionsFiltered(ctx, 1, 1, "", "t/"+path)
				if err != nil {
					t.Fatal(err)
				}
				return page.Total
			}

			body := `{"path":"t/first","payload":{"run":"first"}}`
			st, first, replay := idemPost(t, base, "/api/execute", ptr("key-1"), body)
			if st != 200 || replay {
				t.Fatalf("first submit = %d %s (replayed %v)", st, first, replay)
			}
			var started api.Started
			if err := json.Unmarshal(first, &started); err != nil || started.ExecutionID == 0 {
				t.Fatalf("first answer %s: %v", first, err)
			}
			// The same request again (payload keys in another order): the
			// first answer, byte for byte, and no second execution.
			st, again, replay := idemPost(t, base, "/api/execute", ptr("key-1"), `{"payload":{"run":"first"},"path":"t/first"}`)
			if st != 200 || !replay || !bytes.Equal(again, first) {
				t.Fatalf("repeat = %d %s (replayed %v), want 200 %s replayed", st, again, replay, first)
			}
			if n := count("first"); n != 1 {
				t.Fatalf("%d executions after a repeated key, want 1", n)
			}
			// Another request with the key: 422, nothing made.
			st, other, _ := idemPost(t, base, "/api/execute", ptr("key-1"), `{"path":"t/first","payload":{"run":"second"}}`)
			if st != 422 || !bytes.Contains(other, []byte("idempotency_key_reused")) || !bytes.Contains(other, []byte("key-1")) {
				t.Fatalf("another request with the key = %d %s, want 422 idempotency_key_reused naming the key", st, other)
			}
			if n := count("first"); n != 1 {
				t.Fatalf("%d executions after a refused reuse, want still 1", n)
			}
			// Without a key every submit makes one.
			for range 2 {
				if st, b, _ := idemPost(t, base, "/api/execute", nil, `{"path":"t/keyless"}`); st != 200 {
					t.Fatalf("keyless submit = %d %s", st, b)
				}
			}
			if n := count("keyless"); n != 2 {
				t.Fatalf("%d keyless executions, want 2", n)
			}
			// Bad keys: 400, nothing made.
			for _, k := range []string{"", strings.Repeat("k", 256), "caf\u00e9", "tab\there"} {
				st, b, _ := idemPost(t, base, "/api/execute", ptr(k), `{"path":"t/bad"}`)
				if st != 400 || !bytes.Contains(b, []byte("Idempotency-Key")) {
					t.Errorf("key %q = %d %s, want 400 naming Idempotency-Key", k, st, b)
				}
			}
			if n := count("bad"); n != 0 {
				t.Fatalf("bad keys made %d executions", n)
			}

			// Concurrent submits of one key: one execution, one answer.
			const racers = 16
			var wg sync.WaitGroup
			answers := make([][]byte, racers)
			statuses := make([]int, racers)
			for i := range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					statuses[i], answers[i], _ = idemPost(t, base, "/api/execute", ptr("raced"), `{"path":"t/raced"}`)
				}()
			}
			wg.Wait()
			for i := range racers {
				if statuses[i] != 200 || !bytes.Equal(answers[i], answers[0]) {
					t.Fatalf("racer %d = %d %s, racer 0 = %d %s: want the same 200", i, statuses[i], answers[i], statuses[0], answers[0])
				}
			}
			if n := count("raced"); n != 1 {
				t.Fatalf("%d concurrent submits of one key made %d executions, want 1", racers, n)
			}
		})
	}
}

// The query submit: a repeated key returns the first query.
func TestIdempotentQuerySubmit(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, func(c *config.Server) { c.Query.ResultsDir = t.TempDir() })
	if _, err := h.API.ProjectPut(t.Context(), "wh", api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	base := h.Srv.URL()
	path := "/api/v2/projects/wh/query/sql"
	st, first, replay := idemPost(t, base, path, ptr("q-1"), `{"sql":"select 1 as one","invalidateCache":true}`)
	if st != 200 || replay {
		t.Fatalf("first submit = %d %s", st, first)
	}
	st, again, replay := idemPost(t, base, path, ptr("q-1"), `{"sql":"select 1 as one","invalidateCache":true}`)
	if st != 200 || !replay || !bytes.Equal(again, first) {
		t.Fatalf("repeat = %d %s (replayed %v), want %s replayed", st, again, replay, first)
	}
	st, other, _ := idemPost(t, base, path, ptr("q-1"), `{"sql":"select 2 as two","invalidateCache":true}`)
	if st != 422 || !bytes.Contains(other, []byte("idempotency_key_reused")) {
		t.Fatalf("another query with the key = %d %s, want 422", st, other)
	}
	// The same key on the execute route is another scope.
	if _, err := h.API.Register(t.Context(), oneStep); err != nil {
		t.Fatal(err)
	}
	if st, b, replay := idemPost(t, base, "/api/execute", ptr("q-1"), `{"path":"t/one"}`); st != 200 || replay {
		t.Fatalf("execute with a query's key = %d %s (replayed %v), want a new execution", st, b, replay)
	}
}
