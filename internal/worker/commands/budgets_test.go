package commands_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
)

// budgetSetup runs a server and a worker with small budgets: renderings
// of one second, 64 KiB of output, workloads of 4 KiB, loops of maxItems.
func budgetSetup(t *testing.T, maxItems int) *bundle {
	t.Helper()
	budgets := config.Budgets{TemplateTimeout: time.Second, TemplateMaxBytes: 64 << 10, LoopMaxItems: maxItems, MaxWorkloadBytes: 4 << 10}
	h := servertest.Start(t, func(c *config.Server) { c.Budgets = budgets })
	logs := &syncBuf{}
	runWorker(t, config.Worker{NATS: h.Cfg.NATS, ServerURL: h.Srv.URL(), WorkerID: "w-" + h.Cfg.NATS.Consumer, Concurrency: 4,
		ShutdownGrace: 5 * time.Second, Budgets: budgets}, logs)
	return &bundle{t: t, Harness: h, api: h.API, logs: logs}
}

// endless renders a 10000x10000 loop: minutes of a core without a budget.
const endless = `{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}x`

func abusive(name, tool string) string {
	return `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: ` + name + `, path: b/` + name + `}
workflow:
  - step: start
    tool:
` + tool
}

const normal = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: normal, path: b/normal}
workload: {who: world}
workflow:
  - step: start
    tool: {kind: noop, result: {hello: "{{ who }}"}}
    next: {arcs: [{step: second}]}
  - step: second
    tool: {kind: noop, result: {again: "{{ start.hello }}"}}
`

// A budget hit fails its own execution with the setting and the limit,
// on the server (a step's config) and on the worker (a task list); the
// executions next to it complete and health keeps answering meanwhile.
func TestBudgetHitFailsOnlyItsExecution(t *testing.T) {
	t.Parallel()
	b := budgetSetup(t, 100_000)
	ctx := t.Context()
	cases := []struct {
		name, tool, want string
	}{
		{"server_time", `      kind: noop
      result: {x: "` + endless + `"}
`, "MILLRACE_TEMPLATE_TIMEOUT_MS (1000 ms)"},
		{"server_bytes", `      kind: noop
      result: {x: "{{ 'x' * 100000000 }}"}
`, "MILLRACE_TEMPLATE_MAX_BYTES (65536 bytes)"},
		{"worker_time", `      - name: spin
        kind: noop
        result: {x: "` + endless + `"}
`, "MILLRACE_TEMPLATE_TIMEOUT_MS (1000 ms)"},
		{"worker_bytes", `      - name: big
        kind: noop
        result: {x: "{% for i in range(1000) %}{{ 'y' * 1000 }}{% endfor %}"}
`, "MILLRACE_TEMPLATE_MAX_BYTES (65536 bytes)"},
	}
	for _, c := range cases {
		if _, err := b.api.Register(ctx, abusive(c.name, c.tool)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.api.Register(ctx, normal); err != nil {
		t.Fatal(err)
	}

	// Health answers all along; its slowest answer is reported, and only
	// a generous bound asserted.
	stop := make(chan struct{})
	var healthErr error
	var slowest time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.Srv.URL()+"/api/health", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				healthErr = err
				return
			}
			resp.Body.Close()
			slowest = max(slowest, time.Since(start))
		}
	}()

	ids := map[string]int64{}
	for _, c := range cases {
		st, err := b.api.Execute(ctx, "b/"+c.name, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[c.name] = st.ExecutionID
	}
	var normals []int64
	for i := 0; i < 10; i++ {
		st, err := b.api.Execute(ctx, "b/normal", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		normals = append(normals, st.ExecutionID)
	}
	for _, c := range cases {
		ex := b.waitEnded(ids[c.name])
		if ex.Status != api.ExecFailed || !strings.Contains(ex.Error, c.want) {
			t.Errorf("%s: execution %s (%s); want failed naming %s", c.name, ex.Status, ex.Error, c.want)
		}
	}
	for _, id := range normals {
		if ex := b.waitEnded(id); ex.Status != api.ExecCompleted || string(ex.Result) != `{"again":"world"}` {
			t.Errorf("normal execution %d: %s %s (%s)", id, ex.Status, ex.Result, ex.Error)
		}
	}
	close(stop)
	wg.Wait()
	if healthErr != nil {
		t.Fatalf("health: %v", healthErr)
	}
	t.Logf("slowest health answer while budgets were hit: %v", slowest)
	if slowest > 10*time.Second {
		t.Errorf("health took %v while a rendering ran", slowest)
	}
}

// A workload over MILLRACE_MAX_WORKLOAD_BYTES is refused at submit with
// 422 budget_exceeded naming the setting; a loop over more items than
// MILLRACE_LOOP_MAX_ITEMS fails its execution.
func TestWorkloadAndLoopBudgets(t *testing.T) {
	t.Parallel()
	b := budgetSetup(t, 50)
	ctx := t.Context()
	if _, err := b.api.Register(ctx, normal); err != nil {
		t.Fatal(err)
	}
	_, err := b.api.Execute(ctx, "b/normal", 0, map[string]any{"blob": strings.Repeat("z", 5000)})
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != "budget_exceeded" ||
		!strings.Contains(ae.Message, "MILLRACE_MAX_WORKLOAD_BYTES (4096 bytes)") {
		t.Fatalf("oversized workload: %v; want 422 budget_exceeded naming MILLRACE_MAX_WORKLOAD_BYTES (4096 bytes)", err)
	}
	if ex := b.run(normal, map[string]any{"blob": "small"}); ex.Status != api.ExecCompleted {
		t.Fatalf("a small workload: %s (%s)", ex.Status, ex.Error)
	}
	items := make([]any, 60)
	for i := range items {
		items[i] = i
	}
	loop := `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: loop, path: b/loop}
workflow:
  - step: start
    loop: {in: "{{ items }}", iterator: it}
    tool: {kind: noop, result: {n: "{{ it }}"}}
`
	ex := b.run(loop, map[string]any{"items": items})
	if ex.Status != api.ExecFailed || !strings.Contains(ex.Error, "loop over 60 items exceeds MILLRACE_LOOP_MAX_ITEMS (50 items)") {
		t.Fatalf("loop over 60 items: %s (%s)", ex.Status, ex.Error)
	}
	if ex := b.run(loop, map[string]any{"items": items[:50]}); ex.Status != api.ExecCompleted {
		t.Fatalf("loop over 50 items: %s (%s)", ex.Status, ex.Error)
	}
}

func (b *bundle) waitEnded(id int64) api.Execution {
	b.t.Helper()
	var ex api.Execution
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var err error
		ex, err = b.api.Execution(b.t.Context(), id)
		if err != nil {
			b.t.Fatal(err)
		}
		if ex.Status != api.ExecRunning {
			return ex
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("execution %d did not end\n%s", id, b.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
