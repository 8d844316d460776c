package e2e

// Flows end to end: the playbook language (loops, retries, branches,
// children, cancel) run by real `millrace server` and `millrace worker`
// processes, and by `millrace run --runtime local`, against real
// PostgreSQL, NATS and HTTP services.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/wait"
)

// itemsServer serves GET /N/items: a JSON list of N items {id, name}, so
// api_url=<server>/N picks how many a run fetches.
func itemsServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head, ok := strings.CutSuffix(r.URL.Path, "/items")
		n, err := strconv.Atoi(strings.TrimPrefix(head, "/"))
		if !ok || err != nil {
			http.NotFound(w, r)
			return
		}
		items := make([]map[string]any, n)
		for i := range items {
			items[i] = map[string]any{"id": i + 1, "name": fmt.Sprintf("item-%d", i+1)}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(items)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// checkFetchLoopInsert asserts what examples/fetch_loop_insert.yaml did
// for one execution that fetched n >= threshold items: one row per item,
// and the `summarize` branch's read-back as the execution's result.
func checkFetchLoopInsert(t *testing.T, db string, ex api.Execution, n int) {
	t.Helper()
	mustStatus(t, ex, api.ExecCompleted)
	rows := query(t, db, "SELECT id, name FROM fetched_items WHERE execution_id = $1 ORDER BY id", ex.ExecutionID)
	if len(rows) != n {
		t.Fatalf("execution %d inserted %d rows, want %d: %v", ex.ExecutionID, len(rows), n, rows)
	}
	names := make([]string, n)
	for i, r := range rows {
		if r["id"] != int32(i+1) || r["name"] != fmt.Sprintf("item-%d", i+1) {
			t.Fatalf("row %d = %v, want id %d name item-%d", i, r, i+1, i+1)
		}
		names[i] = r["name"].(string)
	}
	res, ok := decode(t, ex.Result).(map[string]any)
	if !ok {
		t.Fatalf("result = %s, want the summarize step's rows", ex.Result)
	}
	got, _ := res["rows"].([]any)
	if len(got) != 1 {
		t.Fatalf("result = %s, want one summary row (the summarize branch)", ex.Result)
	}
	row := got[0].(map[string]any)
	if num(t, row["n"]) != float64(n) || row["names"] != strings.Join(names, ",") {
		t.Fatalf("summary row = %v, want n=%d names=%s", row, n, strings.Join(names, ","))
	}
}

// The seeds' playbook, offline: fetch a list over HTTP, insert it from a
// parallel loop with a postgres credential, branch on the count. Run by
// `millrace run --runtime distributed` against a server with two workers.
func TestFetchLoopInsertDistributed(t *testing.T) {
	t.Parallel()
	c := newFlowCluster(t, 2)
	db := newDatabase(t)
	c.putCredential("pg_local", "postgres", map[string]any{"url": db})
	items := itemsServer(t)
	file := repoFile(t, "examples/fetch_loop_insert.yaml")

	ex, code := runJSON(t, file, "--runtime", "distributed", "--server", c.url, "--set", "api_url="+items.URL+"/6")
	if code != 0 {
		t.Fatalf("millrace run exited %d for a completed execution", code)
	}
	checkFetchLoopInsert(t, db, ex, 6)
	c.checkExactlyOnce([]int64{ex.ExecutionID}, map[string]bool{"start": true, "fetch": true, "insert": true, "summarize": true})
	evs := c.events(ex.ExecutionID)
	if n := len(eventsOf(evs, api.EvCommandCompleted, "insert")); n != 6 {
		t.Fatalf("insert ran %d iterations, want 6", n)
	}
	if n := len(eventsOf(evs, api.EvLoopDone, "insert")); n != 1 {
		t.Fatalf("loop.done fired %d times, want 1", n)
	}
	if n := len(eventsOf(evs, api.EvCommandIssued, "too_few")); n != 0 {
		t.Fatalf("the exclusive branch also issued too_few")
	}

	// Two items take the other branch; the context holds the count.
	few := c.executeAndWait("examples/fetch_loop_insert", map[string]any{"api_url": items.URL + "/2"}, 60*time.Second)
	mustStatus(t, few, api.ExecCompleted)
	if got := decode(t, few.Result); jsonString(got) != `{"branch":"too_few","inserted":2}` {
		t.Fatalf("result with 2 items = %s, want the too_few branch", few.Result)
	}
	if n := len(query(t, db, "SELECT 1 FROM fetched_items WHERE execution_id = $1", few.ExecutionID)); n != 2 {
		t.Fatalf("2-item run inserted %d rows", n)
	}
	if n := len(eventsOf(c.events(few.ExecutionID), api.EvCommandIssued, "summarize")); n != 0 {
		t.Fatalf("the 2-item run issued summarize too")
	}
}

// The same playbook, unchanged, in the local runtime: one process, no
// server, no NATS, the credential from --credentials.
func TestFetchLoopInsertLocal(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	items := itemsServer(t)
	creds := writeCredentials(t, map[string]map[string]any{"pg_local": {"url": db}})
	ex, code := runJSON(t, repoFile(t, "examples/fetch_loop_insert.yaml"), "--runtime", "local",
		"--credentials", creds, "--set", "api_url="+items.URL+"/5")
	if code != 0 {
		t.Fatalf("millrace run exited %d for a completed execution", code)
	}
	checkFetchLoopInsert(t, db, ex, 5)
	if jsonString(decode(t, ex.Context)) != `{"inserted":5}` {
		t.Fatalf("context = %s, want inserted=5 from the loop's set", ex.Context)
	}
}

// loopPlaybook: a parallel loop whose iterations sleep {{ pause }} seconds
// and echo their index and item, then a step that reads the loop result.
const loopPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: loop_once
  path: e2e/loop_once
workload:
  items: [a, b, c, d, e, f, g, h]
  pause: 1
  width: 3
workflow:
  - step: start
    loop:
      in: "{{ items }}"
      iterator: item
      spec:
        mode: parallel
        max_in_flight: 3
    tool:
      kind: shell
      cmds:
        - "sleep {{ pause }}; echo {{ loop.index0 }}-{{ item }}"
    next:
      arcs:
        - step: summary
          when: "{{ event.name == 'loop.done' }}"
  - step: summary
    tool:
      kind: noop
      result:
        count: "{{ start | length }}"
        last: "{{ start.data[-1].stdout | trim }}"
`

var loopItems = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

// checkLoopOnce asserts that every iteration of the loop step `start` has
// exactly one completed command, loop.done fired once with the ordered
// list of results, and at most maxInFlight iterations were ever
// outstanding. It returns the highest attempt any iteration needed.
func checkLoopOnce(c *cluster, id int64, maxInFlight int) int {
	t := c.t
	t.Helper()
	maxAttempt := c.checkExactlyOnce([]int64{id}, map[string]bool{"start": true, "summary": true})
	evs := c.events(id)
	byIndex := map[int]int{}
	for _, e := range eventsOf(evs, api.EvCommandIssued, "start") {
		cmd, err := c.api.Command(t.Context(), e.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.LoopID == 0 || cmd.Status != api.CmdCompleted {
			t.Fatalf("iteration command %s: loop %d status %s, want a completed loop iteration", cmd.CommandID, cmd.LoopID, cmd.Status)
		}
		byIndex[cmd.LoopIndex]++
	}
	for i := range loopItems {
		if byIndex[i] != 1 {
			t.Fatalf("loop index %d has %d commands, want exactly 1 (all: %v)", i, byIndex[i], byIndex)
		}
	}
	if len(byIndex) != len(loopItems) {
		t.Fatalf("iterations %v, want indexes 0..%d", byIndex, len(loopItems)-1)
	}
	done := eventsOf(evs, api.EvLoopDone, "start")
	if len(done) != 1 {
		t.Fatalf("loop.done fired %d times, want exactly once", len(done))
	}
	var results []struct{ Stdout string }
	if err := json.Unmarshal(done[0].Result, &results); err != nil || len(results) != len(loopItems) {
		t.Fatalf("loop.done result = %s (%v), want %d iteration results", done[0].Result, err, len(loopItems))
	}
	for i, r := range results {
		if want := fmt.Sprintf("%d-%s", i, loopItems[i]); strings.TrimSpace(r.Stdout) != want {
			t.Fatalf("loop result %d = %q, want %q (results must be in item order)", i, r.Stdout, want)
		}
	}
	// Outstanding iterations, in event order: issued ones not yet finished.
	out, peak := 0, 0
	for _, e := range evs {
		if e.Step != "start" {
			continue
		}
		switch e.EventType {
		case api.EvCommandIssued:
			out++
			peak = max(peak, out)
		case api.EvCommandCompleted:
			out--
		}
	}
	if peak > maxInFlight {
		t.Fatalf("%d iterations were outstanding at once, over max_in_flight %d", peak, maxInFlight)
	}
	if peak < 2 {
		t.Fatalf("at most %d iteration was outstanding at once: the loop did not run in parallel", peak)
	}
	ex, err := c.api.Execution(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got := jsonString(decode(t, ex.Result)); got != `{"count":8,"last":"7-h"}` {
		t.Fatalf("result = %s, want the summary of the ordered loop result", got)
	}
	return maxAttempt
}

// A parallel loop (max_in_flight 3) on two workers: one command per
// iteration, each completed once, loop.done once, results in order.
func TestParallelLoopRunsEachIterationOnce(t *testing.T) {
	t.Parallel()
	c := newFlowCluster(t, 2)
	reg := c.register(loopPlaybook)
	ex := c.executeAndWait(reg.Path, nil, 60*time.Second)
	mustStatus(t, ex, api.ExecCompleted)
	if attempt := checkLoopOnce(c, ex.ExecutionID, 3); attempt != 1 {
		t.Fatalf("an iteration needed attempt %d without any fault", attempt)
	}
}

// The worker running a parallel loop is SIGKILLed mid-iteration. Its
// leases expire, another worker re-runs the lost iterations, and still
// every iteration completes once and loop.done fires once.
func TestParallelLoopSurvivesWorkerKill(t *testing.T) {
	t.Parallel()
	c := newFlowCluster(t, 0)
	victim := c.startWorker(20)
	reg := c.register(loopPlaybook)
	st, err := c.api.Execute(t.Context(), reg.Path, 0, map[string]any{"pause": 2})
	if err != nil {
		t.Fatal(err)
	}
	c.waitStarted([]int64{st.ExecutionID}, 2)
	victim.Signal(syscall.SIGKILL)
	_ = victim.Wait(t, 10*time.Second)
	c.startWorker(20)
	ex := c.waitAll([]int64{st.ExecutionID}, 90*time.Second)[0]
	mustStatus(t, ex, api.ExecCompleted)
	if attempt := checkLoopOnce(c, ex.ExecutionID, 3); attempt < 2 {
		t.Fatalf("no iteration was re-run after the kill (max attempt %d): the kill did not land mid-loop", attempt)
	}
}

// flakyServer answers GET /flaky/KEY?fails=N with 503 for the first N
// requests of KEY, then 200; it records when each request arrived.
type flakyServer struct {
	*httptest.Server
	mu    sync.Mutex
	times map[string][]time.Time
}

func newFlakyServer(t *testing.T) *flakyServer {
	f := &flakyServer{times: map[string][]time.Time{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/flaky/")
		fails, _ := strconv.Atoi(r.URL.Query().Get("fails"))
		f.mu.Lock()
		f.times[key] = append(f.times[key], time.Now())
		n := len(f.times[key])
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n <= fails {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"error":"unavailable on request %d"}`, n)
			return
		}
		fmt.Fprintf(w, `{"served_on":%d}`, n)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *flakyServer) requests(key string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.times[key])
}

// retryPlaybook retries 503s with exponential backoff: 4 runs at most,
// 0.6 s, 1.2 s then 2.4 s apart. The steps between delays exceed the
// relay's 0.5 s outbox poll, the jitter on when a due retry is published,
// so each gap the service sees is longer than the one before.
const retryPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: retry_backoff
  path: e2e/retry_backoff
workload:
  api: http://127.0.0.1:1
  fails: 3
workflow:
  - step: start
    tool:
      kind: http
      url: "{{ api }}/flaky/{{ execution_id }}"
      params:
        fails: "{{ fails }}"
      spec:
        policy:
          rules:
            - when: "{{ output.http.status == 503 }}"
              then: {do: retry, attempts: 4, backoff: exponential, delay: 0.6}
            - when: "{{ output.status == 'error' }}"
              then: {do: fail}
`

// Retries with exponential backoff: the recorded attempts, growing delays
// between them, eventual success; and a final failure that carries the
// last error once the attempts are spent.
func TestRetryExponentialBackoff(t *testing.T) {
	t.Parallel()
	c := newFlowCluster(t, 2)
	flaky := newFlakyServer(t)
	reg := c.register(retryPlaybook)

	// Three 503s, then success on the fourth run.
	ok, err := c.api.Execute(t.Context(), reg.Path, 0, map[string]any{"api": flaky.URL, "fails": 3})
	if err != nil {
		t.Fatal(err)
	}
	// Never succeeds: four runs, then the execution fails.
	bad, err := c.api.Execute(t.Context(), reg.Path, 0, map[string]any{"api": flaky.URL, "fails": 100})
	if err != nil {
		t.Fatal(err)
	}
	exs := c.waitAll([]int64{ok.ExecutionID, bad.ExecutionID}, 60*time.Second)

	mustStatus(t, exs[0], api.ExecCompleted)
	if res := decode(t, exs[0].Result).(map[string]any); num(t, res["status"]) != 200 || jsonString(res["body"]) != `{"served_on":4}` {
		t.Fatalf("result = %s, want the fourth request's 200", exs[0].Result)
	}
	evs := c.events(ok.ExecutionID)
	issued := eventsOf(evs, api.EvCommandIssued, "start")
	failed := eventsOf(evs, api.EvCommandFailed, "start")
	sched := eventsOf(evs, api.EvRetryScheduled, "start")
	completed := eventsOf(evs, api.EvCommandCompleted, "start")
	if len(issued) != 4 || len(failed) != 3 || len(sched) != 3 || len(completed) != 1 {
		t.Fatalf("attempts: %d issued, %d failed, %d retries scheduled, %d completed; want 4, 3, 3, 1",
			len(issued), len(failed), len(sched), len(completed))
	}
	for i, e := range issued {
		if e.Attempt != i+1 {
			t.Fatalf("command.issued #%d records attempt %d", i+1, e.Attempt)
		}
	}
	for i, e := range failed {
		if !strings.Contains(e.Error, "503") {
			t.Fatalf("command.failed #%d error %q does not name the 503", i+1, e.Error)
		}
	}
	wantDelays := []time.Duration{600 * time.Millisecond, 1200 * time.Millisecond, 2400 * time.Millisecond}
	for i, e := range sched {
		var r struct {
			DelayMS int64 `json:"delay_ms"`
		}
		if err := json.Unmarshal(e.Result, &r); err != nil || time.Duration(r.DelayMS)*time.Millisecond != wantDelays[i] {
			t.Fatalf("retry %d scheduled with %s, want delay %s", i+1, e.Result, wantDelays[i])
		}
		if e.Attempt != i+2 {
			t.Fatalf("retry %d is scheduled as attempt %d, want %d", i+1, e.Attempt, i+2)
		}
	}
	// The service saw the runs at least the backoff apart. (Only a lower
	// bound: a loaded machine adds seconds to any gap, so "each gap longer
	// than the last" failed under load; the growth is in delay_ms above.)
	reqs := flaky.requests(strconv.FormatInt(ok.ExecutionID, 10))
	if len(reqs) != 4 {
		t.Fatalf("the service saw %d requests, want 4", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		gap := reqs[i].Sub(reqs[i-1])
		if gap < wantDelays[i-1] {
			t.Fatalf("attempt %d came %s after attempt %d, sooner than the %s backoff", i+1, gap, i, wantDelays[i-1])
		}
	}

	// Exhausted: four runs, then a failure that carries the last error.
	mustStatus(t, exs[1], api.ExecFailed)
	if n := len(flaky.requests(strconv.FormatInt(bad.ExecutionID, 10))); n != 4 {
		t.Fatalf("the exhausted run made %d requests, want 4", n)
	}
	for _, want := range []string{"gave up after 4 attempts", "503", "unavailable on request 4"} {
		if !strings.Contains(exs[1].Error, want) {
			t.Fatalf("error %q lacks %q (the last attempt's error)", exs[1].Error, want)
		}
	}
	if n := len(eventsOf(c.events(bad.ExecutionID), api.EvCommandFailed, "start")); n != 4 {
		t.Fatalf("the exhausted run recorded %d command.failed, want 4", n)
	}
}

// cancelPlaybook forks into a long shell command, a slow HTTP call and a
// failing step whose retry waits 5 s: at cancel time two commands are
// running and one is pending.
const cancelPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: cancel_me
  path: e2e/cancel_me
workload:
  pid_file: /nonexistent
  slow_url: http://127.0.0.1:1
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs:
        - step: long_shell
        - step: slow_http
        - step: flaky
  - step: long_shell
    tool:
      kind: shell
      cmds:
        - "echo $$ > {{ pid_file }}; exec sleep 30"
    next:
      arcs: [{step: after}]
  - step: slow_http
    tool:
      kind: http
      url: "{{ slow_url }}"
      timeout: 60
    next:
      arcs: [{step: after}]
  - step: flaky
    tool:
      kind: shell
      cmds: ["exit 1"]
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: retry, attempts: 3, delay: 5}
  - step: after
    tool: {kind: noop}
`

// processGone reports whether pid no longer exists.
func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// Cancel ends the execution, cancels the pending retry (it never runs, and
// nothing is issued after the cancel), and stops the running shell and
// http tools through their context: the worker's heartbeat gets 409, the
// sleep process is killed and the HTTP request is abandoned.
func TestCancelStopsPendingAndRunningCommands(t *testing.T) {
	t.Parallel()
	c := newFlowCluster(t, 1)
	worker := c.procs[len(c.procs)-1]
	hit := make(chan struct{}, 1)
	abandoned := make(chan struct{})
	var once sync.Once
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hit <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
			once.Do(func() { close(abandoned) })
		case <-time.After(45 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	pidFile := t.TempDir() + "/sleep.pid"
	reg := c.register(cancelPlaybook)
	st, err := c.api.Execute(t.Context(), reg.Path, 0, map[string]any{"pid_file": pidFile, "slow_url": slow.URL})
	if err != nil {
		t.Fatal(err)
	}

	// Wait for the shell to run, the request to arrive and the retry to
	// be scheduled.
	select {
	case <-hit:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow HTTP call never arrived")
	}
	var pid int
	var retryAt time.Time
	wait.For(t, 30*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return fmt.Errorf("the shell has not written its pid: %v", err)
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return err
		}
		sched := eventsOf(c.events(st.ExecutionID), api.EvRetryScheduled, "flaky")
		if len(sched) == 0 {
			return fmt.Errorf("flaky's retry is not scheduled yet")
		}
		var r struct {
			AvailableAt time.Time `json:"available_at"`
		}
		if err := json.Unmarshal(sched[0].Result, &r); err != nil {
			return err
		}
		retryAt = r.AvailableAt
		return nil
	})
	if processGone(pid) {
		t.Fatalf("the shell's sleep (pid %d) is not running before the cancel", pid)
	}

	ex, err := c.api.Cancel(t.Context(), st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, ex, api.ExecCancelled)

	// The running tools stop through their context.
	select {
	case <-abandoned:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow HTTP request was not abandoned within 10s of the cancel")
	}
	wait.For(t, 10*time.Second, func() error {
		if !processGone(pid) {
			return fmt.Errorf("sleep (pid %d) is still running after the cancel", pid)
		}
		return nil
	})
	wait.For(t, 10*time.Second, func() error {
		if n := strings.Count(worker.Output(), "lease lost"); n < 2 {
			return fmt.Errorf("the worker stopped %d commands on a 409 heartbeat, want 2", n)
		}
		return nil
	})

	// Past the retry's due time (and a reaper pass or two), nothing ran.
	wait.For(t, 30*time.Second, func() error {
		if time.Now().Before(retryAt.Add(2 * time.Second)) {
			return fmt.Errorf("waiting past the retry's due time %s", retryAt)
		}
		return nil
	})
	evs := c.events(st.ExecutionID)
	cancelAt := slices.IndexFunc(evs, func(e api.Event) bool { return e.EventType == api.EvExecCancelled })
	if cancelAt < 0 {
		t.Fatal("no execution.cancelled event")
	}
	for _, e := range evs[cancelAt+1:] {
		if e.EventType == api.EvCommandIssued || e.EventType == api.EvCommandClaimed || e.EventType == api.EvCommandCompleted {
			t.Fatalf("%s for %s after the cancel", e.EventType, e.Step)
		}
	}
	for _, e := range eventsOf(evs, api.EvCommandIssued, "") {
		cmd, err := c.api.Command(t.Context(), e.EventID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case cmd.Step == "long_shell" || cmd.Step == "slow_http" || (cmd.Step == "flaky" && cmd.Retry == 1):
			if cmd.Status != api.CmdCancelled {
				t.Fatalf("%s (retry %d) is %s after the cancel, want cancelled", cmd.Step, cmd.Retry, cmd.Status)
			}
		case cmd.Step == "after":
			t.Fatal("step after was issued")
		}
	}
	if n := len(eventsOf(evs, api.EvCommandIssued, "flaky")); n != 2 {
		t.Fatalf("flaky was issued %d times, want 2 (the run and the pending retry)", n)
	}
	if n := len(eventsOf(evs, api.EvCommandClaimed, "flaky")); n != 1 {
		t.Fatalf("flaky was claimed %d times, want 1: the cancelled retry must never run", n)
	}
	if got, _ := c.api.Execution(t.Context(), st.ExecutionID); got.Status != api.ExecCancelled {
		t.Fatalf("execution is %s after the tools stopped, want cancelled", got.Status)
	}
}

// childPlaybook doubles n, then finishes with its own execution id.
const childPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: child
  path: e2e/child
workload:
  n: 1
workflow:
  - step: start
    tool:
      kind: noop
      result:
        doubled: "{{ n * 2 }}"
    next:
      arcs: [{step: finish}]
  - step: finish
    tool:
      kind: noop
      result:
        done: true
        child_id: "{{ execution_id }}"
`

// parentPlaybook calls the child twice: once for an inner step's result
// (return_step), once for the child's own result.
const parentPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: parent
  path: e2e/parent
workflow:
  - step: start
    tool:
      kind: playbook
      path: e2e/child
      return_step: start
      input:
        n: 21
    next:
      arcs: [{step: whole}]
  - step: whole
    tool:
      kind: playbook
      path: e2e/child
      input:
        n: "{{ start.doubled }}"
    next:
      arcs: [{step: report}]
  - step: report
    tool:
      kind: noop
      result:
        doubled: "{{ start.doubled }}"
        whole: "{{ whole }}"
`

// checkParentResult asserts the parent received both children's results
// and returns the id the second child reported.
func checkParentResult(t *testing.T, ex api.Execution) int64 {
	t.Helper()
	mustStatus(t, ex, api.ExecCompleted)
	var res struct {
		Doubled float64
		Whole   struct {
			Done    bool
			ChildID int64 `json:"child_id"`
		}
	}
	if err := json.Unmarshal(ex.Result, &res); err != nil {
		t.Fatalf("result %s: %v", ex.Result, err)
	}
	if res.Doubled != 42 || !res.Whole.Done || res.Whole.ChildID == 0 || res.Whole.ChildID == ex.ExecutionID {
		t.Fatalf("result = %s, want doubled 42 from return_step and the child's own result with its execution id", ex.Result)
	}
	return res.Whole.ChildID
}

// A parent step of kind playbook runs a registered child and receives its
// result (or, with return_step, that step's); each child records its
// parent.
func TestChildPlaybookDistributed(t *testing.T) {
	t.Parallel()
	c := newFlowCluster(t, 2)
	c.register(childPlaybook)
	reg := c.register(parentPlaybook)
	ex := c.executeAndWait(reg.Path, nil, 60*time.Second)
	childID := checkParentResult(t, ex)
	kids := c.children(ex.ExecutionID)
	if len(kids) != 2 {
		t.Fatalf("parent %d has %d child executions, want 2", ex.ExecutionID, len(kids))
	}
	found := false
	for _, id := range kids {
		k, err := c.api.Execution(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		mustStatus(t, k, api.ExecCompleted)
		if k.Path != "e2e/child" {
			t.Fatalf("child runs %s", k.Path)
		}
		found = found || id == childID
	}
	if !found {
		t.Fatalf("the child that answered (%d) is not among the parent's children %v", childID, kids)
	}
}

// The same parent and child in the local runtime: the child is found next
// to the parent's file.
func TestChildPlaybookLocal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "child.yaml", childPlaybook)
	parent := writeFile(t, dir, "parent.yaml", parentPlaybook)
	ex, code := runJSON(t, parent, "--runtime", "local")
	if code != 0 {
		t.Fatalf("millrace run exited %d", code)
	}
	checkParentResult(t, ex)
}

// millrace validate prints every problem as file:line:col with a hint and
// exits non-zero.
func TestValidateReportsFileLineCol(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, t.TempDir(), "bad.yaml", `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: bad
  path: e2e/bad
workflow:
  - step: start
    tool:
      kind: shell
      cmds: ["echo hi"]
    retries: 3
    next:
      arcs:
        - step: nowhere
  - step: orphan
    tool: {kind: teleport}
`)
	stdout, stderr, code := cli(t, nil, "validate", bad)
	if code == 0 {
		t.Fatalf("validate exited 0 for a bad playbook:\n%s", stdout)
	}
	for _, want := range []string{
		bad + `:11:5: unknown key "retries" in step`,
		bad + `:14:17: step "start": arc targets unknown step "nowhere"`,
		bad + `:15:5: warning: step "orphan" is unreachable`,
		bad + `:16:18: step "orphan": unknown tool kind "teleport"`,
		"hint:",
	} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("validate output lacks %q:\n%s\n%s", want, stdout, stderr)
		}
	}
	good, _, code := cli(t, nil, "validate", repoFile(t, "examples/fetch_loop_insert.yaml"))
	if code != 0 || !strings.Contains(good, ": ok") {
		t.Fatalf("validate of the shipped example exited %d:\n%s", code, good)
	}
}
