package commands_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wait"
)

const routed = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: routed, path: w/routed}
workflow:
  - step: start
    pool: gpu
    tool: {kind: noop}
    next: {arcs: [{step: plain}]}
  - step: plain
    tool: {kind: noop}
    next: {arcs: [{step: fan}]}
  - step: fan
    pool: gpu
    loop: {in: "{{ [1, 2, 3] }}", iterator: n, spec: {mode: parallel}}
    tool:
      - {name: a, kind: noop}
    next: {arcs: [{step: late}]}
  - step: late
    pool: late
    tool: {kind: noop}
`

// startWorker runs a commands worker of pool ("" = default) until the
// test ends.
func startWorker(t *testing.T, h *servertest.Harness, id, pool string, logs *syncBuf) {
	t.Helper()
	runWorker(t, config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: id, Pool: pool, Concurrency: 4, ShutdownGrace: 5 * time.Second}, logs)
}

// Two pools: each step is claimed by a worker of its own pool. A step
// routed to a pool nobody runs yet waits, and once a worker of that pool
// starts, the reaper's re-notification reaches it. The default consumer,
// left unfiltered as an older version made it, is narrowed to the default
// subject by the default worker.
func TestPoolsRouteSteps(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, func(c *config.Server) {
		c.NATS.FetchTimeout, c.NATS.FetchHeartbeat = time.Second, 400*time.Millisecond
		c.ReapInterval, c.RedeliverAfter = 200*time.Millisecond, time.Second
	})
	ctx := t.Context()

	// An older version's default consumer: no filter, so it would take
	// every pool's steps.
	def := h.Consumer(t).Config
	def.FilterSubject = ""
	if _, err := h.JS.UpdateConsumer(ctx, h.Cfg.NATS.Stream, def); err != nil {
		t.Fatal(err)
	}
	if f := h.Consumer(t).Config.FilterSubject; f != "" {
		t.Fatalf("setup: default consumer filter %q, want none", f)
	}
	logs := &syncBuf{}
	startWorker(t, h, "w-default", "", logs)
	if f := h.Consumer(t).Config.FilterSubject; f != h.Cfg.NATS.Subject {
		t.Fatalf("default consumer filter %q after the default worker started, want %q", f, h.Cfg.NATS.Subject)
	}
	startWorker(t, h, "w-gpu", "gpu", logs)
	gpu, err := h.JS.Consumer(ctx, h.Cfg.NATS.Stream, h.Cfg.NATS.Consumer+"_gpu")
	if err != nil {
		t.Fatalf("pool gpu's consumer: %v", err)
	}
	if f := gpu.CachedInfo().Config.FilterSubject; f != h.Cfg.NATS.Subject+".gpu" {
		t.Fatalf("pool gpu's consumer filter %q, want %q", f, h.Cfg.NATS.Subject+".gpu")
	}

	reg, err := h.API.Register(ctx, routed)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.API.Execute(ctx, reg.Path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	commandsOf := func() []store.Command {
		cmds, err := store.ReadValue(ctx, h.Srv.Store(), func(q store.Querier) ([]store.Command, error) {
			return q.CommandListByExecution(ctx, st.ExecutionID)
		})
		if err != nil {
			t.Fatal(err)
		}
		return cmds
	}
	// Nobody runs pool "late": its step waits, issued, and is re-notified.
	var lateCmd store.Command
	wait.For(t, 30*time.Second, func() error {
		for _, c := range commandsOf() {
			if c.Step == "late" && c.Publishes >= 2 {
				lateCmd = c
				return nil
			}
		}
		return fmt.Errorf("step late not issued and re-notified yet\n%s", logs)
	})
	if lateCmd.Status != api.CmdIssued || lateCmd.WorkerID != "" {
		t.Fatalf("step late, with no worker in its pool: %s by %q, want issued and unclaimed", lateCmd.Status, lateCmd.WorkerID)
	}
	startWorker(t, h, "w-late", "late", logs)
	wait.For(t, 30*time.Second, func() error {
		ex, err := h.API.Execution(ctx, st.ExecutionID)
		if err != nil {
			return err
		}
		if ex.Status != api.ExecCompleted {
			return fmt.Errorf("execution %s", ex.Status)
		}
		return nil
	})

	want := map[string]string{"start": "w-gpu", "plain": "w-default", "fan": "w-gpu", "late": "w-late"}
	seen := map[string]int{}
	for _, c := range commandsOf() {
		seen[c.Step]++
		if c.WorkerID != want[c.Step] {
			t.Errorf("step %s (pool %q) was run by %q, want %q", c.Step, c.Pool, c.WorkerID, want[c.Step])
		}
		if wantPool := map[string]string{"start": "gpu", "fan": "gpu", "late": "late"}[c.Step]; c.Pool != wantPool {
			t.Errorf("step %s: command pool %q, want %q", c.Step, c.Pool, wantPool)
		}
	}
	if seen["start"] != 1 || seen["plain"] != 1 || seen["fan"] != 3 || seen["late"] != 1 {
		t.Errorf("commands per step %v, want start 1, plain 1, fan 3, late 1", seen)
	}
	if _, err := h.JS.Consumer(ctx, h.Cfg.NATS.Stream, bus.PoolConsumer(h.Cfg.NATS.Consumer, "late")); err != nil {
		t.Errorf("pool late's consumer: %v", err)
	}
	// The API shows a command's pool.
	if c, err := h.API.Command(ctx, lateCmd.EventID); err != nil || c.Pool != "late" {
		t.Errorf("GET command of step late = pool %q, %v; want late", c.Pool, err)
	}
}
