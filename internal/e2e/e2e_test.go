// Package e2e drives real millrace processes (server, workers, dev) against
// an embedded NATS server and PostgreSQL or SQLite, through the public HTTP
// API, and injects faults: SIGKILLed workers, NATS and server restarts, NATS
// down at submit time.
package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/proctest"
)

// branching has an inclusive fork and an exclusive choice, so every run
// exercises both arc modes; `pause` makes commands last long enough for
// faults to land mid-command.
const branching = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: branching
  path: e2e/branching
workload:
  n: 3
  pause: 0
workflow:
  - step: start
    tool:
      kind: shell
      cmds:
        - "sleep {{ pause }}; echo {{ n }}"
    next:
      spec:
        mode: inclusive
      arcs:
        - step: left
          when: "{{ n > 2 }}"
        - step: right
  - step: left
    tool:
      kind: noop
      result:
        side: left
        n: "{{ n }}"
  - step: right
    tool:
      kind: shell
      cmds:
        - "sleep {{ pause }}; echo right"
    next:
      spec:
        mode: exclusive
      arcs:
        - step: big
          when: "{{ n > 5 }}"
        - step: small
  - step: big
    tool:
      kind: noop
  - step: small
    tool:
      kind: shell
      cmds:
        - "echo small-{{ execution_id }}"
`

var allSteps = map[string]bool{"start": true, "left": true, "right": true, "small": true}

func TestServerAndTwoWorkersPostgres(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	metrics := proctest.FreeAddr(t)
	c.start("worker-metrics", "worker", "--concurrency", "20", "--metrics-addr", metrics)
	c.startWorker(20)
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 40, nil)
	c.waitAll(ids, 60*time.Second)
	c.checkExactlyOnce(ids, allSteps)

	// The standalone worker serves its own Prometheus metrics.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`millrace_worker_jobs_total\{outcome="completed",stream="commands"\} [1-9]`).Match(body) {
		t.Fatalf("worker /metrics lacks completed commands:\n%s", body)
	}

	// The result is the last step that finished: after the inclusive fork
	// that is either branch's end, `left` or `small` (never `big`: n=3).
	ex, _ := c.api.Execution(t.Context(), ids[0])
	if !strings.Contains(string(ex.Result), "small-") && !strings.Contains(string(ex.Result), `"side":"left"`) {
		t.Fatalf("result = %s, want the output of step small or left", ex.Result)
	}
	// A payload overrides the workload and flips both branches.
	big := c.executeMany(reg.Path, 1, func(int) map[string]any { return map[string]any{"n": 1} })
	c.waitAll(big, 30*time.Second)
	c.checkExactlyOnce(big, map[string]bool{"start": true, "right": true, "small": true})
	if n := c.countEvents(big, api.EvCommandIssued); n != 3 {
		t.Fatalf("with n=1 want 3 commands (start, right, small), got %d", n)
	}
}

// Two servers share one database; each worker talks to a different one.
// Commands issued by one server are claimed and finished through the other.
func TestTwoServersShareOneDatabase(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	api2 := c.startSecondServer()
	c.startWorker(20)
	c.startEnv("worker-via-2", []string{"SERVER_API_URL=" + api2.Base}, "worker", "--concurrency", "20")
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 20, nil)
	// Half the executions start on the second server.
	for i := 0; i < 20; i++ {
		st, err := api2.Execute(t.Context(), reg.Path, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, st.ExecutionID)
	}
	c.waitAll(ids, 60*time.Second)
	c.checkExactlyOnce(ids, allSteps)
	workers := map[string]bool{}
	for _, id := range ids {
		evs, _ := c.api.Events(t.Context(), id)
		for _, e := range evs {
			if e.EventType == api.EvCommandCompleted {
				workers[e.WorkerID] = true
			}
		}
	}
	if len(workers) != 2 {
		t.Fatalf("commands were completed by %d workers, want both (%v)", len(workers), workers)
	}
}

// Fault 1: a worker is SIGKILLed while it runs commands. Its leases expire,
// the reaper re-notifies, the other worker finishes them as attempt 2.
func TestWorkerKilledMidCommand(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{lease: "2"})
	c.startServer()
	victim := c.startWorker(50)
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 20, func(int) map[string]any { return map[string]any{"pause": 3} })
	// Wait until the victim is inside commands, then kill it.
	c.waitStarted(ids, 10)
	victim.Signal(syscall.SIGKILL)
	_ = victim.Wait(t, 10*time.Second)
	c.startWorker(50)
	c.waitAll(ids, 90*time.Second)
	if maxAttempt := c.checkExactlyOnce(ids, allSteps); maxAttempt < 2 {
		t.Fatalf("no command was re-run after the kill (max attempt %d); the kill did not land mid-command", maxAttempt)
	}
}

// Fault 2: NATS restarts with memory storage, so every queued notification
// and the stream itself are lost while executions are in flight.
func TestNATSRestartMidFlight(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	c.startWorker(20)
	c.startWorker(20)
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 30, func(int) map[string]any { return map[string]any{"pause": 1} })
	c.waitStarted(ids, 5)
	if err := c.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	c.waitAll(ids, 90*time.Second)
	c.checkExactlyOnce(ids, allSteps)
}

// Fault 3: the server is SIGKILLed and restarted while executions run.
// Workers keep their results and report them once it is back.
func TestServerRestartMidFlight(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	srv := c.startServer()
	c.startWorker(20)
	c.startWorker(20)
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 30, func(int) map[string]any { return map[string]any{"pause": 1} })
	c.waitStarted(ids, 5)
	srv.Signal(syscall.SIGKILL)
	_ = srv.Wait(t, 10*time.Second)
	c.startServer() // same database, same address
	c.waitAll(ids, 90*time.Second)
	c.checkExactlyOnce(ids, allSteps)
}

// Fault 4: NATS is down when work is submitted. The server accepts it (the
// outbox holds the notifications) and everything runs once NATS is back.
func TestNATSDownAtSubmit(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	c.startWorker(20)
	reg := c.register(branching)
	c.nats.Server().Shutdown()
	ids := c.executeMany(reg.Path, 20, nil)
	h, _ := c.api.Health(t.Context())
	if h.NATS == "ok" {
		t.Fatalf("health reports NATS ok while it is down: %v", h)
	}
	// Nothing can run while NATS is down.
	for _, id := range ids[:3] {
		ex, err := c.api.Execution(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Status != api.ExecRunning {
			t.Fatalf("execution %d is %s with NATS down", id, ex.Status)
		}
	}
	if err := c.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	c.waitAll(ids, 90*time.Second)
	c.checkExactlyOnce(ids, allSteps)
}

// NATS is down when the server starts: it serves the API anyway, accepts
// work into the outbox, and publishes it once NATS appears.
func TestServerStartsWithoutNATS(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.nats.Server().Shutdown()
	c.startServer() // waits until /api/health answers
	h, err := c.api.Health(t.Context())
	if err != nil || h.Status != "degraded" {
		t.Fatalf("health with NATS down at start = %v, %v; want degraded", h, err)
	}
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 10, nil)
	if err := c.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	c.startWorker(20)
	c.waitAll(ids, 90*time.Second)
	c.checkExactlyOnce(ids, allSteps)
}

// SIGTERM: the worker stops fetching, finishes what it holds and exits 0.
func TestWorkerGracefulShutdown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	w := c.startWorker(20)
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 5, func(int) map[string]any { return map[string]any{"pause": 1} })
	c.waitStarted(ids, 1)
	w.Signal(syscall.SIGTERM)
	if err := w.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("worker exited with %v after SIGTERM, want 0\n%s", err, w.Output())
	}
	if got := c.countEvents(ids, api.EvCommandFailed); got != 0 {
		t.Fatalf("%d commands failed during graceful shutdown", got)
	}
	c.startWorker(20)
	c.waitAll(ids, 60*time.Second)
	c.checkExactlyOnce(ids, allSteps)
}

// millrace dev: embedded NATS + SQLite, driven over HTTP with many
// concurrent executions.
func TestDevModeSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCluster(t, clusterOpts{db: "none"})
	p := c.startDev(dir, 2, 20)
	reg := c.register(branching)
	ids := c.executeMany(reg.Path, 40, nil)
	c.waitAll(ids, 60*time.Second)
	c.checkExactlyOnce(ids, allSteps)
	if _, err := os.Stat(filepath.Join(dir, "millrace.db")); err != nil {
		t.Fatalf("dev mode did not keep its SQLite store under --data-dir: %v", err)
	}
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("dev exited with %v after SIGTERM\n%s", err, p.Output())
	}
}

// The README's first command: dev mode runs the shipped example to the end.
func TestDevRunExample(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "dev", "--run", filepath.Join(root, "examples", "branching.yaml"), "--once",
		"--data-dir", t.TempDir(), "--nats-port", "-1", "--addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "MILLRACE_LOG_LEVEL=warn")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("millrace dev --run failed: %v\n%s", err, out)
	}
	for _, want := range []string{"millrace dev is up", "completed", "result:"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`API server\s+http://127\.0\.0\.1:\d+`).Match(out) {
		t.Fatalf("dev banner does not say where the API is:\n%s", out)
	}
	if strings.Contains(string(out), "Press Ctrl-C") {
		t.Fatalf("with --once dev exits by itself, yet it says to press Ctrl-C:\n%s", out)
	}
}

// Every shipped example validates, and the self-contained ones run in the
// local runtime exactly as docs/playbooks.md shows.
func TestExamples(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if len(files) < 4 {
		t.Fatalf("found %d examples, want at least 4", len(files))
	}
	out, err := exec.Command(binary, append([]string{"validate"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("millrace validate examples: %v\n%s", err, out)
	}
	for _, name := range []string{"branching.yaml", "loop.yaml", "retry.yaml"} {
		cmd := exec.Command(binary, "run", filepath.Join(root, "examples", name), "--runtime", "local", "--json")
		cmd.Env = append(os.Environ(), "MILLRACE_LOG_LEVEL=warn")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("millrace run %s: %v\n%s", name, err, out)
		}
		var ex api.Execution
		if err := json.Unmarshal(out, &ex); err != nil || ex.Status != api.ExecCompleted {
			t.Fatalf("millrace run %s: status %q, err %v\n%s", name, ex.Status, err, out)
		}
	}
}
