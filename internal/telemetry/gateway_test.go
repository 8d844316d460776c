package telemetry_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/gateway"
	"github.com/millrace/millrace/internal/wait"
)

// A browser's request through the gateway is one trace: the gateway's
// server span is the caller's child, and its call to the server carries
// the gateway's client span as traceparent.
func TestGatewayTracesItsRequestsAndCalls(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t)
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	seen := make(chan string, 4) // traceparent of each proxied call
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/api/auth/whoami" {
			_ = json.NewEncoder(w).Encode(map[string]any{"token_id": 5, "kind": "api", "role": "operator", "user": map[string]any{"user_id": "u", "roles": []string{"operator"}}})
			return
		}
		seen <- r.Header.Get("traceparent")
		_, _ = w.Write([]byte("[]"))
	}))
	t.Cleanup(up.Close)

	var cfg config.Gateway
	config.GatewaySet(&cfg)
	id := fmt.Sprintf("%d", time.Now().UnixNano())
	cfg.NATS.URL, cfg.ServerURL, cfg.Addr = emb.URL(), up.URL, "127.0.0.1:0"
	cfg.SessionBucket, cfg.RequestBucket = "sessions_"+id, "requests_"+id
	cfg.Telemetry = config.Telemetry{Exporter: "otlp", Endpoint: rc.URL, Protocol: "http/protobuf", ServiceName: "millrace-gateway"}
	g, err := gateway.New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(g.Handler())
	t.Cleanup(gw.Close)

	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req, _ := http.NewRequestWithContext(t.Context(), "GET", gw.URL+"/noetl/catalog", nil)
	req.Header.Set("Authorization", "Bearer mrt_x")
	req.Header.Set("traceparent", caller)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /noetl/catalog through the gateway: %d", resp.StatusCode)
	}
	upstream := <-seen
	g.Close() // exports the gateway's spans

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	var spans []span
	wait.For(t, 10*time.Second, func() error {
		spans, _ = rc.snapshot()
		if find(spans, traceID, "millrace-gateway", "GET /noetl/{path...}") == nil || find(spans, traceID, "millrace-gateway", "GET /api/catalog") == nil {
			return errors.New("the gateway's server and client spans have not arrived")
		}
		return nil
	})
	srv := find(spans, traceID, "millrace-gateway", "GET /noetl/{path...}")
	cl := find(spans, traceID, "millrace-gateway", "GET /api/catalog")
	if srv.Parent != "00f067aa0ba902b7" {
		t.Errorf("the gateway's server span has parent %s, want the caller's span 00f067aa0ba902b7", srv.Parent)
	}
	if cl.Parent != srv.ID {
		t.Errorf("the proxied call's span has parent %s, want the gateway's server span %s\n%s", cl.Parent, srv.ID, dump(spans, traceID))
	}
	if want := "00-" + traceID + "-" + cl.ID + "-01"; upstream != want {
		t.Errorf("the server got traceparent %q, want the gateway's client span %q", upstream, want)
	}
	if strings.Contains(upstream, "00f067aa0ba902b7") {
		t.Error("the caller's traceparent went to the server unchanged")
	}
}
