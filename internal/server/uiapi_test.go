package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/server/servertest"
)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if v != nil && res.StatusCode == 200 {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return res.StatusCode
}

// The server mounts the web UI at /ui/ and answers the UI's two reads:
// a playbook's step graph with its problems, and the streams' state.
func TestUIRoutes(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, nil)
	base := h.Srv.URL()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(base + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/ui/" {
		t.Fatalf("/ui: %d to %q, want 301 to /ui/", res.StatusCode, res.Header.Get("Location"))
	}
	var cfg struct {
		APIBase string `json:"api_base"`
	}
	if code := getJSON(t, base+"/ui/config.json", &cfg); code != 200 || cfg.APIBase != "/api" {
		t.Fatalf("/ui/config.json: %d %+v", code, cfg)
	}

	pb := `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: g, path: ui/graph}
workflow:
  - step: start
    tool: {kind: noop}
    next: {spec: {mode: inclusive}, arcs: [{step: a, when: "{{ true }}"}, {step: b}]}
  - step: a
    tool:
      - name: one
        kind: noop
    next: {arcs: [{step: c}]}
  - step: b
    tool: {kind: noop}
  - step: c
    tool: {kind: noop}
  - step: orphan
    tool: {kind: noop}
`
	if _, err := h.API.Register(t.Context(), pb); err != nil {
		t.Fatal(err)
	}
	var g api.PlaybookGraph
	if code := getJSON(t, base+"/api/graph/ui/graph?version=1", &g); code != 200 {
		t.Fatalf("graph: %d", code)
	}
	if g.Start != "start" || len(g.Steps) != 5 || len(g.Arcs) != 3 || g.Steps[0].Mode != "inclusive" || g.Steps[1].Kind != "tasks" ||
		len(g.Steps[1].Tasks) != 1 || g.Arcs[0].When == "" || len(g.Errors) != 0 {
		t.Fatalf("graph = %+v", g)
	}
	if len(g.Warnings) == 0 || !strings.Contains(g.Warnings[0].Msg, "orphan") {
		t.Fatalf("warnings = %+v, want the unreachable step orphan", g.Warnings)
	}
	if code := getJSON(t, base+"/api/graph/ui/nope", nil); code != 404 {
		t.Fatalf("graph of an unknown playbook: %d, want 404", code)
	}

	var st api.Streams
	if code := getJSON(t, base+"/api/streams", &st); code != 200 {
		t.Fatalf("streams: %d", code)
	}
	if st.NATS != "ok" || st.Stats == nil || len(st.Streams) != 1 || st.Streams[0].Name != h.Cfg.NATS.Stream || st.Streams[0].Role != "commands" {
		t.Fatalf("streams = %+v", st)
	}
	var found bool
	for _, c := range st.Streams[0].Consumers {
		if c.Name == h.Cfg.NATS.Consumer && c.MaxInFlight > 0 && c.AckWait != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("consumers = %+v, want the worker pool %s", st.Streams[0].Consumers, h.Cfg.NATS.Consumer)
	}
}
