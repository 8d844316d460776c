package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An abusive rendering (a 10000x10000 template loop) under a budget long
// enough to outlast the test: health keeps answering while it spins, and
// SIGTERM ends it at once: the submit gets a retryable 503 answer, and the
// server exits without waiting out its HTTP shutdown grace.
func TestBudgetRenderingEndsOnSIGTERM(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	p := c.startEnv("server", []string{"MILLRACE_TEMPLATE_TIMEOUT_MS=600000"}, "server")
	c.server = p
	c.waitHealthy(p)
	c.register(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: spin, path: e2e/spin}
workflow:
  - step: start
    tool:
      kind: noop
      result: {x: "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x"}
`)
	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := http.Post(c.url+"/api/execute", "application/json", bytes.NewReader([]byte(`{"path":"e2e/spin"}`)))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- answer{status: resp.StatusCode, body: string(b)}
	}()

	// Health while the rendering spins (20 answers); the slowest is
	// reported, only a generous bound asserted.
	var slowest time.Duration
	for i := 0; i < 20; i++ {
		select {
		case a := <-answered:
			t.Fatalf("the submit ended before SIGTERM: %+v", a)
		case <-time.After(100 * time.Millisecond):
		}
		start := time.Now()
		if _, err := c.api.Health(t.Context()); err != nil {
			t.Fatalf("health while rendering: %v", err)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("slowest health answer while a rendering spun: %v", slowest)
	if slowest > 10*time.Second {
		t.Errorf("health took %v while a rendering spun", slowest)
	}

	start := time.Now()
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(t, 2*time.Minute); err != nil {
		t.Errorf("server exit after SIGTERM: %v\n%s", err, p.Output())
	}
	took := time.Since(start)
	t.Logf("server exited %v after SIGTERM with a rendering in flight", took)
	var a answer
	select {
	case a = <-answered:
	case <-time.After(time.Minute):
		t.Fatal("the submit got no answer after the server exited")
	}
	// Cancelled, not cut off at the end of the shutdown grace: an answer
	// the client can retry.
	if a.err != nil || a.status != http.StatusServiceUnavailable {
		t.Fatalf("submit during SIGTERM: %+v; want a 503 answer\n%s", a, p.Output())
	}
	if !strings.Contains(p.Output(), "millrace server stopped") {
		t.Errorf("the server did not stop cleanly:\n%s", p.Output())
	}
}
