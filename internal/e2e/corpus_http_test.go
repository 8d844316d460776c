package e2e

// The corpus's HTTP playbooks, run unchanged from the corpus directory in
// both runtimes. They call httpbin.org and a NoETL server that cannot be
// reached from here, so `--set api_url=` points them at a local stand-in.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/api"
)

// httpStandIn answers what the corpus's HTTP playbooks request: httpbin's
// GET /get (echoing the query as args) and NoETL's GET /health. It records
// each request as "METHOD /path?query".
type httpStandIn struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

// Bodies the stand-in serves; the playbooks' results are checked against
// them.
const (
	standInHealthBody = `{"status":"ok"}`
	standInGetBody    = `{"args":{"test":"hello"},"origin":"stand-in"}`
)

func newHTTPStandIn(t *testing.T) *httpStandIn {
	t.Helper()
	s := &httpStandIn{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.Method+" "+r.URL.RequestURI())
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/get":
			args := map[string]string{}
			for k, v := range r.URL.Query() {
				args[k] = v[0]
			}
			b, _ := json.Marshal(map[string]any{"args": args, "origin": "stand-in"})
			w.Write(b)
		case "/health":
			fmt.Fprint(w, standInHealthBody)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *httpStandIn) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// corpusHTTP is one HTTP playbook of the corpus with what its run must
// show: the requests the stand-in saw and the execution's result, which is
// what the file's own python produces from the stand-in's answer.
type corpusHTTP struct {
	name     string
	file     string
	requests []string
	result   string
}

var corpusHTTPFiles = []corpusHTTP{
	// start GETs /get with params {test: hello}; the arc stores start.data
	// (the http body) as ctx.response_data, process echoes it, end says
	// done.
	{name: "simple_http", file: "examples/simple_http.yaml", requests: []string{"GET /get?test=hello"}, result: `{"status":"done"}`},
	// process reads http_response.get('status_code') (the http tool
	// returns it beside status for NoETL), so the file's own check passes.
	{name: "http_test", file: "http_test.yaml", requests: []string{"GET /health"}, result: `{"status":"completed","test_passed":true}`},
}

// checkCorpusHTTP asserts an execution of cf completed with its expected
// result after sending exactly the expected requests to the stand-in.
func checkCorpusHTTP(t *testing.T, cf corpusHTTP, ex api.Execution, standIn *httpStandIn) {
	t.Helper()
	mustStatus(t, ex, api.ExecCompleted)
	if got := jsonString(decode(t, ex.Result)); got != cf.result {
		t.Fatalf("%s result = %s, want %s", cf.name, got, cf.result)
	}
	if got := standIn.requests(); !slices.Equal(got, cf.requests) {
		t.Fatalf("%s: the stand-in saw %q, want %q", cf.name, got, cf.requests)
	}
	if cf.name == "simple_http" {
		// The arc's set stored start.data, which reads as the http body
		// (NoETL's {status_code, headers, data} view of an http result).
		var ctx struct {
			ResponseData any `json:"response_data"`
		}
		if err := json.Unmarshal(ex.Context, &ctx); err != nil || jsonString(ctx.ResponseData) != standInGetBody {
			t.Fatalf("simple_http context = %s, want response_data = the body %s", ex.Context, standInGetBody)
		}
	}
}

// stepResult returns the result a step's completed command recorded.
func (c *cluster) stepResult(id int64, step string) string {
	c.t.Helper()
	done := eventsOf(c.events(id), api.EvCommandCompleted, step)
	if len(done) != 1 {
		c.t.Fatalf("step %s completed %d times, want once", step, len(done))
	}
	return jsonString(decode(c.t, done[0].Result))
}

// Both files by `millrace run --runtime distributed` on a server with two
// workers; the events show each step's result.
func TestCorpusHTTPDistributed(t *testing.T) {
	t.Parallel()
	dir := corpusDir(t)
	c := newFlowCluster(t, 2)
	for _, cf := range corpusHTTPFiles {
		standIn := newHTTPStandIn(t)
		ex, code := runJSON(t, filepath.Join(dir, cf.file), "--runtime", "distributed", "--server", c.url, "--set", "api_url="+standIn.URL)
		checkCorpusHTTP(t, cf, ex, standIn)
		if code != 0 {
			t.Fatalf("%s: millrace run exited %d for a completed execution", cf.name, code)
		}
		switch cf.name {
		case "simple_http":
			// process echoes ctx.response_data, the http body.
			var got struct {
				Status string
				Data   any
			}
			res := c.stepResult(ex.ExecutionID, "process")
			if json.Unmarshal([]byte(res), &got) != nil || got.Status != "processed" || jsonString(got.Data) != standInGetBody {
				t.Fatalf("simple_http: process result = %s, want status processed and the http body as data", res)
			}
		case "http_test":
			for step, want := range map[string]string{
				"process": `{"body":` + standInHealthBody + `,"status":"ok","status_code":200}`,
				"verify":  `{"status":"passed","status_code":200,"verified":true}`,
			} {
				if got := c.stepResult(ex.ExecutionID, step); got != want {
					t.Fatalf("http_test: step %s result = %s, want %s", step, got, want)
				}
			}
		}
	}
}

// Both files by `millrace run --runtime local`: one process, no server.
func TestCorpusHTTPLocal(t *testing.T) {
	t.Parallel()
	dir := corpusDir(t)
	for _, cf := range corpusHTTPFiles {
		t.Run(cf.name, func(t *testing.T) {
			t.Parallel()
			standIn := newHTTPStandIn(t)
			ex, code := runJSON(t, filepath.Join(dir, cf.file), "--runtime", "local", "--set", "api_url="+standIn.URL)
			checkCorpusHTTP(t, cf, ex, standIn)
			if code != 0 {
				t.Fatalf("%s: millrace run exited %d for a completed execution", cf.name, code)
			}
		})
	}
}
