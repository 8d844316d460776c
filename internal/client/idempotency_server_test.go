package client_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

const idemPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: idem
  path: t/idem
workflow:
  - step: start
    tool:
      kind: noop
`

// loseAnswers is a proxy to the server that passes the first n submits
// on (so the server commits them) and then loses their answers: it breaks
// the connection (lose "conn") or answers 503 unavailable (lose "503"),
// as a server restart or a PostgreSQL outage after the commit does. It
// records each submit's Idempotency-Key.
func loseAnswers(t *testing.T, target string, n int64, lose string) (*httptest.Server, *keys) {
	t.Helper()
	u, _ := url.Parse(target)
	ks := &keys{}
	var lost atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		submit := r.Method == "POST" && (r.URL.Path == "/api/execute" || strings.HasSuffix(r.URL.Path, "/query/sql"))
		if submit {
			ks.add(r.Header.Get(client.IdempotencyHeader))
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, u.String()+r.URL.RequestURI(), bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if submit && resp.StatusCode == 200 && lost.Add(1) <= n {
			if lose == "503" {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"the store is unavailable"}}`))
				return
			}
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv, ks
}

type keys struct {
	mu   sync.Mutex
	list []string
}

func (k *keys) add(s string) { k.mu.Lock(); k.list = append(k.list, s); k.mu.Unlock() }
func (k *keys) get() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.list...)
}

// A submit whose answer is lost after the server committed it (the
// connection broke, or a 503) is retried by the client with the same
// Idempotency-Key, and the server makes one execution, not two.
func TestSubmitRetryAfterLostAnswerMakesOne(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, func(c *config.Server) { c.DatabaseURL = pgtest.NewSchema(t) })
	ctx := t.Context()
	if _, err := h.API.Register(ctx, idemPlaybook); err != nil {
		t.Fatal(err)
	}
	for i, lose := range []string{"conn", "503"} {
		proxy, ks := loseAnswers(t, h.Srv.URL(), 2, lose)
		c := client.New(proxy.URL)
		c.Retry = client.Retry{Min: time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: time.Minute}
		st, err := c.Execute(ctx, "t/idem", 0, nil)
		if err != nil {
			t.Fatalf("lose %s: Execute through lost answers: %v", lose, err)
		}
		sent := ks.get()
		if len(sent) != 3 || sent[0] == "" || sent[1] != sent[0] || sent[2] != sent[0] {
			t.Fatalf("lose %s: the attempts sent keys %q, want one key three times", lose, sent)
		}
		page, err := h.API.ExecutionsFiltered(ctx, 1, 10, "", "t/idem")
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != int64(i+1) || page.Executions[0].ExecutionID != st.ExecutionID {
			t.Fatalf("lose %s: %d executions in all (newest %d), want %d with the newest the answer's %d",
				lose, page.Total, page.Executions[0].ExecutionID, i+1, st.ExecutionID)
		}
	}
	// A key of the caller's own rides every attempt too.
	proxy, ks := loseAnswers(t, h.Srv.URL(), 1, "conn")
	c := client.New(proxy.URL)
	c.Retry = client.Retry{Min: time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: time.Minute}
	first, err := c.Execute(client.WithIdempotencyKey(ctx, "my-key"), "t/idem", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Execute(client.WithIdempotencyKey(ctx, "my-key"), "t/idem", 0, nil)
	if err != nil || again.ExecutionID != first.ExecutionID {
		t.Fatalf("a rerun with the same key = %d, %v; want the first execution %d", again.ExecutionID, err, first.ExecutionID)
	}
	if sent := ks.get(); len(sent) != 3 || sent[0] != "my-key" || sent[2] != "my-key" {
		t.Fatalf("sent keys %q, want my-key on every attempt", sent)
	}
}
