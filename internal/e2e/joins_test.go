package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/wait"
)

// joinPlaybook forks inclusively into five branches, b4 never taken (its
// when is false), all leading to reduce, the join (docs/playbooks.md,
// "Fan-out and joins"). Branches sleep `pause` seconds so a fault can land
// while they run.
const joinPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: join, path: e2e/join}
workload: {pause: 0}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs:
        - step: b1
        - step: b2
        - step: b3
        - step: b4
          when: "{{ false }}"
        - step: b5
  - step: b1
    tool: {kind: shell, cmds: ["sleep {{ pause }}; echo one"]}
    next: {arcs: [{step: reduce}]}
  - step: b2
    tool: {kind: shell, cmds: ["echo two"]}
    next: {arcs: [{step: reduce}]}
  - step: b3
    tool: {kind: shell, cmds: ["sleep {{ pause }}; echo three"]}
    next: {arcs: [{step: reduce}]}
  - step: b4
    tool: {kind: shell, cmds: ["echo four"]}
    next: {arcs: [{step: reduce}]}
  - step: b5
    tool: {kind: noop, result: five}
    next: {arcs: [{step: reduce}]}
  - step: reduce
    tool:
      kind: noop
      result:
        b1: "{{ b1.stdout | trim }}"
        b2: "{{ b2.stdout | trim }}"
        b3: "{{ b3.stdout | trim }}"
        b4: "{{ b4 | default('skipped') }}"
        b5: "{{ b5 }}"
`

var joinLive = []string{"b1", "b2", "b3", "b5"}

const joinResult = `{"b1":"one","b2":"two","b3":"three","b4":"skipped","b5":"five"}`

// checkJoinOnce checks each execution completed with reduce's result, the
// never-taken b4 was never issued, and reduce was issued exactly once, not
// before any live branch's command.completed.
func (c *cluster) checkJoinOnce(ids []int64) {
	c.t.Helper()
	for _, id := range ids {
		ex, err := c.api.Execution(c.t.Context(), id)
		if err != nil {
			c.t.Fatal(err)
		}
		if ex.Status != api.ExecCompleted || jsonString(decode(c.t, ex.Result)) != joinResult {
			c.t.Fatalf("execution %d: %s with %s (%s); want completed with %s", id, ex.Status, ex.Result, ex.Error, joinResult)
		}
		evs := c.events(id)
		issued := eventsOf(evs, api.EvCommandIssued, "reduce")
		if len(issued) != 1 {
			c.t.Fatalf("execution %d: reduce issued %d times, want once", id, len(issued))
		}
		if n := len(eventsOf(evs, api.EvCommandIssued, "b4")); n != 0 {
			c.t.Fatalf("execution %d: the never-taken b4 was issued %d times", id, n)
		}
		for _, b := range joinLive {
			done := eventsOf(evs, api.EvCommandCompleted, b)
			if len(done) == 0 {
				c.t.Fatalf("execution %d: branch %s never completed", id, b)
			}
			// Event ids order events by millisecond, then by server: two
			// servers' events in one millisecond may be out of order.
			last := done[len(done)-1]
			if last.EventID>>22 > issued[0].EventID>>22 {
				c.t.Fatalf("execution %d: reduce issued (event %d) before %s completed (event %d)", id, issued[0].EventID, b, last.EventID)
			}
		}
	}
}

// A worker is SIGKILLed while it runs branches: their leases expire, the
// other worker runs them again, and reduce still runs once, after them.
func TestJoinSurvivesWorkerKill(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{lease: "2"})
	c.startServer()
	victim := c.startWorker(50)
	reg := c.register(joinPlaybook)
	ids := c.executeMany(reg.Path, 5, func(int) map[string]any { return map[string]any{"pause": 3} })
	// Every execution has b1 and b3 sleeping on the victim.
	wait.For(t, 30*time.Second, func() error {
		for _, id := range ids {
			if n := len(eventsOf(c.events(id), api.EvCommandStarted, "b1")); n == 0 {
				return fmt.Errorf("execution %d: b1 not started yet", id)
			}
		}
		return nil
	})
	victim.Signal(syscall.SIGKILL)
	_ = victim.Wait(t, 10*time.Second)
	c.startWorker(50)
	c.waitAll(ids, 90*time.Second)
	if maxAttempt := c.checkExactlyOnce(ids, map[string]bool{"reduce": true}); maxAttempt < 2 {
		t.Fatalf("no branch was re-run after the kill (max attempt %d): the kill did not land mid-branch", maxAttempt)
	}
	c.checkJoinOnce(ids)
}

// Two servers on one PostgreSQL database, a worker through each: branches
// of one execution finish through both servers at once, and each reduce is
// issued once.
func TestJoinTwoServersOneDatabase(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	api2 := c.startSecondServer()
	c.startWorker(20)
	c.startEnv("worker-via-2", []string{"SERVER_API_URL=" + api2.Base}, "worker", "--concurrency", "20")
	reg := c.register(joinPlaybook)
	ids := c.executeMany(reg.Path, 10, nil)
	for range 10 {
		st, err := api2.Execute(t.Context(), reg.Path, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, st.ExecutionID)
	}
	c.waitAll(ids, 60*time.Second)
	c.checkExactlyOnce(ids, map[string]bool{"reduce": true})
	c.checkJoinOnce(ids)
}

// The local runtime runs the same join once: reduce appends a line to a
// file per run, and its result is the file's line count.
func TestJoinLocal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := dir + "/reduce.log"
	src := strings.Replace(joinPlaybook, "workload: {pause: 0}", "workload: {pause: 0.2, out: "+out+"}", 1)
	src = strings.Replace(src, `  - step: reduce
    tool:
      kind: noop
      result:`, `  - step: reduce
    tool:
      kind: shell
      cmds: ["echo run >> {{ out }}; wc -l < {{ out }}"]
    next: {arcs: [{step: report}]}
  - step: report
    tool:
      kind: noop
      result:
        runs: "{{ reduce.stdout | trim }}"`, 1)
	file := writeFile(t, dir, "join.yaml", src)
	ex, code := runJSON(t, file, "--runtime", "local")
	if code != 0 {
		t.Fatalf("millrace run exited %d", code)
	}
	want := strings.Replace(joinResult, "}", `,"runs":"1"}`, 1)
	if got := jsonString(decode(t, ex.Result)); got != want {
		t.Fatalf("result = %s, want %s (reduce ran once, with every branch's result)", got, want)
	}
}

// The server is SIGKILLed after the quick branches arrived at the join and
// while the slow ones run: the restarted server reads the arrivals back
// from the database and issues reduce once, when the slow branches report.
func TestJoinSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	srv := c.startServer()
	c.startWorker(50)
	reg := c.register(joinPlaybook)
	ids := c.executeMany(reg.Path, 5, func(int) map[string]any { return map[string]any{"pause": 3} })
	wait.For(t, 30*time.Second, func() error {
		for _, id := range ids {
			if n := len(eventsOf(c.events(id), api.EvJoinArrived, "reduce")); n < 2 {
				return fmt.Errorf("execution %d: %d arrivals at reduce, want b2's and b5's", id, n)
			}
		}
		return nil
	})
	srv.Signal(syscall.SIGKILL)
	_ = srv.Wait(t, 10*time.Second)
	c.startServer() // same database, same address
	c.waitAll(ids, 90*time.Second)
	c.checkExactlyOnce(ids, map[string]bool{"reduce": true})
	c.checkJoinOnce(ids)
}
