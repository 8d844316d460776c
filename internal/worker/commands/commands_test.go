package commands_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker/commands"
)

type bundle struct {
	t *testing.T
	*servertest.Harness
	api  *client.Client
	logs *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup runs an in-process server and one worker with a short ack wait and
// lease, so that "longer than the ack wait" takes seconds, not minutes.
func setup(t *testing.T, ackWait time.Duration) *bundle {
	t.Helper()
	h := servertest.Start(t, func(c *config.Server) {
		c.NATS.AckWait, c.NATS.FetchTimeout, c.NATS.FetchHeartbeat = ackWait, time.Second, 400*time.Millisecond
		c.LeaseTTL, c.ReapInterval, c.RedeliverAfter = ackWait, 200*time.Millisecond, 30*time.Second
	})
	logs := &syncBuf{}
	runWorker(t, config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: "w-" + h.Cfg.NATS.Consumer, Concurrency: 10, ShutdownGrace: 5 * time.Second}, logs)
	return &bundle{t: t, Harness: h, api: h.API, logs: logs}
}

// runWorker runs a commands worker, logging to logs, until the test ends.
func runWorker(t *testing.T, cfg config.Worker, logs *syncBuf) {
	t.Helper()
	w, err := commands.New(t.Context(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (b *bundle) run(playbook string, payload map[string]any) api.Execution {
	b.t.Helper()
	ctx := b.t.Context()
	reg, err := b.api.Register(ctx, playbook)
	if err != nil {
		b.t.Fatal(err)
	}
	st, err := b.api.Execute(ctx, reg.Path, 0, payload)
	if err != nil {
		b.t.Fatal(err)
	}
	var ex api.Execution
	if err := wait.Poll(30*time.Second, func() error {
		ex, err = b.api.Execution(ctx, st.ExecutionID)
		if err != nil {
			b.t.Fatal(err)
		}
		if ex.Status == api.ExecRunning {
			return errors.New("running")
		}
		return nil
	}); err != nil {
		b.t.Fatalf("execution %d did not end\n%s", st.ExecutionID, b.logs.String())
	}
	return ex
}

const slow = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: slow, path: w/slow}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["sleep 3; echo done"]}
`

// A command that runs longer than the ack wait is kept alive with
// InProgress and heartbeats: NATS never redelivers it and nobody else
// claims it.
func TestLongCommandIsNotRedelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, 1*time.Second)
	ex := b.run(slow, nil)
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s: %s\n%s", ex.Status, ex.Error, b.logs.String())
	}
	evs, _ := b.api.Events(t.Context(), ex.ExecutionID)
	claims := 0
	for _, e := range evs {
		if e.EventType == api.EvCommandClaimed {
			claims++
		}
	}
	if claims != 1 {
		t.Fatalf("%d claims for a 3 s command with a 1 s ack wait and lease, want 1", claims)
	}
	// Delivered.Consumer counts every delivery, redeliveries included
	// (NumRedelivered only counts those still unacknowledged).
	if ci := b.Consumer(b.t); ci.Delivered.Consumer != 1 || ci.NumAckPending != 0 {
		t.Fatalf("consumer: %d deliveries, ack pending %d; want exactly 1 delivery and nothing pending", ci.Delivered.Consumer, ci.NumAckPending)
	}
}

// A message that is not a notification is terminated, not redelivered
// max_deliver times.
func TestPoisonMessageIsTerminated(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	if _, err := b.JS.Publish(t.Context(), b.Cfg.NATS.Subject, []byte(`{"hello": "world"}`)); err != nil {
		t.Fatal(err)
	}
	var ci *jetstream.ConsumerInfo
	wait.For(t, 10*time.Second, func() error {
		ci = b.Consumer(b.t)
		if ci.Delivered.Consumer >= 1 && ci.NumAckPending == 0 && ci.NumPending == 0 {
			return nil
		}
		return fmt.Errorf("poison message still pending: %+v", ci)
	})
	if ci.NumRedelivered != 0 {
		t.Fatalf("poison message was redelivered %d times", ci.NumRedelivered)
	}
	if !strings.Contains(b.logs.String(), "terminating undecodable notification") {
		t.Fatalf("worker did not log why it dropped the message:\n%s", b.logs.String())
	}
}

// Duplicate notifications (same command, different message ids) are acked
// at once and the command runs once.
func TestDuplicateNotificationsRunOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	sub, err := b.NC.SubscribeSync(b.Cfg.NATS.Subject)
	if err != nil {
		t.Fatal(err)
	}
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: once, path: w/once}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["sleep 0.5; echo ran"]}
`, nil)
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s", ex.Status)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		m := nats.NewMsg(b.Cfg.NATS.Subject)
		m.Data = msg.Data
		m.Header.Set("Nats-Msg-Id", fmt.Sprintf("dup-%d", i))
		if _, err := b.JS.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	// Past the deadline the count below says what went wrong.
	_ = wait.Poll(10*time.Second, func() error {
		if ci := b.Consumer(b.t); ci.NumPending != 0 || ci.NumAckPending != 0 || ci.Delivered.Consumer < 6 {
			return fmt.Errorf("consumer not settled: %+v", ci)
		}
		return nil
	})
	evs, _ := b.api.Events(t.Context(), ex.ExecutionID)
	n := 0
	for _, e := range evs {
		if e.EventType == api.EvCommandClaimed || e.EventType == api.EvCommandCompleted {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("after 5 duplicate notifications: %d claim+completion events, want 2", n)
	}
}

// A result over the 64 KB inline limit is stored once by reference; the API
// returns it whole, and the next step's templates can read it.
func TestLargeResultByReference(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: big, path: w/big}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["head -c 200000 /dev/zero | tr '\\0' x"]}
    next: {arcs: [{step: measure}]}
  - step: measure
    tool:
      kind: noop
      result:
        length: "{{ start.stdout | length }}"
`, nil)
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s: %s", ex.Status, ex.Error)
	}
	if string(ex.Result) != `{"length":200000}` {
		t.Fatalf("result = %s, want the next step to see all 200000 bytes", ex.Result)
	}
	evs, _ := b.api.Events(t.Context(), ex.ExecutionID)
	for _, e := range evs {
		if e.EventType == api.EvCommandCompleted && e.Step == "start" {
			if len(e.Result) < 200000 || strings.Contains(string(e.Result), `"$ref"`) {
				t.Fatalf("events API returned %d bytes (%.60s…), want the whole result, not the reference", len(e.Result), e.Result)
			}
			return
		}
	}
	t.Fatal("no command.completed for step start")
}

// A step's `timeout` bounds its command; the failure says so.
func TestStepTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	start := time.Now()
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: slowstep, path: w/slowstep}
workflow:
  - step: start
    timeout: 1
    tool: {kind: shell, cmds: ["sleep 20"]}
`, nil)
	if ex.Status != api.ExecFailed || !strings.Contains(ex.Error, "timeout") {
		t.Fatalf("execution %s (%s), want failed by the step timeout", ex.Status, ex.Error)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("a 1 s step timeout took %s to end the execution", d)
	}
}

// Task lists: a task's own policy retries it in the worker, later tasks
// read earlier results by name, and an assert that fails says why.
func TestTaskPolicyAndAssert(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	counter := t.TempDir() + "/n"
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: tasks, path: w/tasks}
workload:
  counter: `+counter+`
workflow:
  - step: start
    tool:
      - name: flaky
        kind: shell
        cmds: ["n=$(cat {{ counter }} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {{ counter }}; [ $n -ge 3 ] && echo ok-$n"]
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' }}"
                then: {do: retry, attempts: 5, delay: 0.05}
      - name: use
        kind: noop
        result:
          saw: "{{ flaky.stdout | trim }}"
`, nil)
	if ex.Status != api.ExecCompleted || string(ex.Result) != `{"saw":"ok-3"}` {
		t.Fatalf("execution %s %s (%s); want completed after two in-worker retries with the third run's output", ex.Status, ex.Result, ex.Error)
	}
	ex = b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: asserted, path: w/asserted}
workflow:
  - step: start
    tool:
      - name: check
        kind: noop
        result: {a: 1}
        assert:
          returns: [b]
`, nil)
	if ex.Status != api.ExecFailed || !strings.Contains(ex.Error, "b") || !strings.Contains(ex.Error, "assert") {
		t.Fatalf("execution %s (%s); want failed by the returns assert naming the missing key", ex.Status, ex.Error)
	}
}

// A policy that retries a *successful* iteration must not let loop.done
// fire before the retry finishes (review finding): the latest command of
// each index decides whether it is done.
func TestLoopRetryOfSuccessfulIteration(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: loopretry, path: w/loopretry}
workflow:
  - step: start
    loop:
      in: "{{ [1, 2, 3] }}"
      iterator: n
      spec: {mode: parallel, max_in_flight: 3}
    tool:
      kind: noop
      result: {n: "{{ n }}"}
      spec:
        policy:
          rules:
            - when: "{{ output.attempt < 2 }}"
              then: {do: retry, attempts: 3, delay: 0.05}
            - else:
                then: {do: continue}
    next: {arcs: [{step: after}]}
  - step: after
    tool: {kind: noop, result: {count: "{{ start | length }}"}}
`, nil)
	if ex.Status != api.ExecCompleted || string(ex.Result) != `{"count":3}` {
		t.Fatalf("execution %s %s (%s); want completed with the 3 iteration results", ex.Status, ex.Result, ex.Error)
	}
	evs, _ := b.api.Events(t.Context(), ex.ExecutionID)
	done, completed := 0, 0
	for _, e := range evs {
		switch e.EventType {
		case "loop.done":
			done++
		case api.EvCommandCompleted:
			if e.Step == "start" {
				completed++
			}
		}
	}
	if done != 1 || completed != 6 {
		t.Fatalf("loop.done %d times, %d iteration completions; want 1 and 6 (each iteration retried once)", done, completed)
	}
}

// A tool result that looks like an internal blob reference is data, not a
// reference (review finding).
func TestResultLookingLikeAReference(t *testing.T) {
	t.Parallel()
	b := setup(t, 2*time.Second)
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: refspoof, path: w/refspoof}
workflow:
  - step: start
    tool:
      kind: noop
      result: {"$ref": "blob:123456", "size": 1}
    next: {arcs: [{step: echo}]}
  - step: echo
    tool: {kind: noop, result: {seen: "{{ start | tojson }}"}}
`, nil)
	if ex.Status != api.ExecCompleted || !strings.Contains(string(ex.Result), `blob:123456`) {
		t.Fatalf("execution %s %s (%s); want completed, echoing the result as data", ex.Status, ex.Result, ex.Error)
	}
}
