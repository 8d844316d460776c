package flow_test

// Routing and rendering as the server drives them: register a playbook,
// execute it, then claim and report its commands through flow.Service, and
// look at what it issued and how the execution ended.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/tools"
)

// routerPlaybook is the routing fixture the engine and flow tests share,
// with start's next in mode.
func routerPlaybook(t testing.TB, mode string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "engine", "testdata", "router.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(b), "MODE", mode, 1)
}

// route is one execution driven by hand, as workers would drive it.
type route struct {
	t    *testing.T
	ctx  context.Context
	flow *flow.Service
	st   *store.Store
	ex   store.Execution
}

// newFlow is a flow service over a fresh SQLite store, with no relay.
func newFlow(t *testing.T) (*flow.Service, *store.Store) {
	t.Helper()
	st := sqlitetest.Store(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return flow.New(st, ids.New(-1), flow.Config{LeaseTTL: time.Minute}, tools.Kinds(), log, func() {}), st
}

// startRoute registers src and executes it.
func startRoute(t *testing.T, src string) *route {
	t.Helper()
	f, st := newFlow(t)
	r := &route{t: t, ctx: t.Context(), flow: f, st: st}
	entry, err := f.Register(r.ctx, src)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if r.ex, err = f.Execute(r.ctx, entry.Path, 0, nil); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	return r
}

// router starts the router playbook with its arcs in mode.
func router(t *testing.T, mode string) *route {
	t.Helper()
	return startRoute(t, routerPlaybook(t, mode))
}

// open returns the execution's commands that have not ended, by step, and
// their steps in issue order.
func (r *route) open() (map[string]store.Command, string) {
	r.t.Helper()
	cmds, err := store.ReadValue(r.ctx, r.st, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(r.ctx, r.ex.ExecutionID)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	byStep := map[string]store.Command{}
	var steps []string
	for _, c := range cmds {
		if !c.Status.Terminal() {
			byStep[c.Step] = c
			steps = append(steps, c.Step)
		}
	}
	return byStep, strings.Join(steps, ",")
}

// tool is the rendered tool of the open command of step.
func (r *route) tool(step string) map[string]any {
	r.t.Helper()
	byStep, steps := r.open()
	c, ok := byStep[step]
	if !ok {
		r.t.Fatalf("no open command for step %s; open: %q", step, steps)
	}
	var tool map[string]any
	d := json.NewDecoder(bytes.NewReader(c.Tool))
	d.UseNumber()
	if err := d.Decode(&tool); err != nil {
		r.t.Fatalf("tool of %s: %v", step, err)
	}
	return tool
}

// report claims the open command of step and reports it ended.
func (r *route) report(step, eventType string, result any, errMsg string) {
	r.t.Helper()
	byStep, steps := r.open()
	c, ok := byStep[step]
	if !ok {
		r.t.Fatalf("no open command for step %s; open: %q", step, steps)
	}
	claimed, err := r.flow.ClaimAndStart(r.ctx, c.EventID, "w1", r.ex.ExecutionID, 0)
	if err != nil {
		r.t.Fatalf("claim %s: %v", step, err)
	}
	raw, err := json.Marshal(result)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.flow.Apply(r.ctx, flow.Report{EventType: eventType, EventID: c.EventID, WorkerID: "w1",
		Attempt: claimed.Attempt, Result: raw, Error: errMsg, ExecutionID: r.ex.ExecutionID}); err != nil {
		r.t.Fatalf("report %s: %v", step, err)
	}
}

// finishStart reports the start step completed with an HTTP status.
func (r *route) finishStart(status int) {
	r.t.Helper()
	r.report("start", api.EvCommandCompleted, map[string]any{"status": status, "body": map[string]any{"id": 1}}, "")
}

// execution is the execution as stored now.
func (r *route) execution() store.Execution {
	r.t.Helper()
	ex, err := store.ReadValue(r.ctx, r.st, func(q store.Querier) (store.Execution, error) {
		return q.ExecutionGet(r.ctx, r.ex.ExecutionID)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return ex
}

// wantFailed checks that the execution failed with an error containing want.
func (r *route) wantFailed(want string) {
	r.t.Helper()
	if ex := r.execution(); ex.Status != api.ExecFailed || !strings.Contains(ex.Error, want) {
		r.t.Fatalf("execution %s with error %q; want failed with %q", ex.Status, ex.Error, want)
	}
}

func TestRouteStart(t *testing.T) {
	t.Parallel()
	r := router(t, "exclusive")

	if _, steps := r.open(); steps != "start" {
		t.Fatalf("issued %q, want start alone", steps)
	}
	tool := r.tool("start")
	if tool["kind"] != "http" || tool["method"] != "GET" || tool["url"] != fmt.Sprintf("https://api.example.com/items/%d", r.ex.ExecutionID) {
		t.Errorf("tool = %#v", tool)
	}
	if h := tool["headers"].(map[string]any); h["Authorization"] != "Bearer czNjcmV0" {
		t.Errorf("headers = %#v", h)
	}
	// The playbook's tool is a template shared by executions: a second
	// execution renders it afresh.
	ex2, err := r.flow.Execute(r.ctx, "tests/router", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r2 := &route{t: t, ctx: r.ctx, flow: r.flow, st: r.st, ex: ex2}
	if got := r2.tool("start")["url"]; got != fmt.Sprintf("https://api.example.com/items/%d", ex2.ExecutionID) {
		t.Errorf("second execution url = %v: the first one modified the playbook", got)
	}

	// base_url missing: the execution fails at once, naming step, field
	// and variable.
	src := strings.Replace(routerPlaybook(t, "exclusive"), "  base_url: https://api.example.com\n", "", 1)
	r = startRoute(t, src)
	r.wantFailed(`step "start" field tool.url: variable "base_url" is undefined`)
	if _, steps := r.open(); steps != "" {
		t.Errorf("issued %q for a step that did not render", steps)
	}
}

func TestRouteExclusive(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]string{200: "ok", 201: "created", 500: "always"} {
		r := router(t, "exclusive")
		r.finishStart(status)
		if _, steps := r.open(); steps != want || r.execution().Status != api.ExecRunning {
			t.Errorf("status %d: issued %q, execution %s; want only %s issued", status, steps, r.execution().Status, want)
		}
	}

	// Earlier results are visible to the issued step's tool, natively.
	r := router(t, "exclusive")
	r.finishStart(200)
	body := r.tool("ok")["input"].(map[string]any)["body"]
	if id, ok := body.(map[string]any)["id"].(json.Number); !ok || id.String() != "1" {
		t.Errorf("ok input body = %#v, want the start result's body mapping", body)
	}
}

func TestRouteInclusive(t *testing.T) {
	t.Parallel()
	r := router(t, "inclusive")
	r.finishStart(200)
	if _, steps := r.open(); steps != "ok,always" {
		t.Errorf("issued %q, want ok and always", steps)
	}
	if n := r.tool("always")["input"].(map[string]any)["n"]; n != json.Number("200") {
		t.Errorf("always input n = %#v, want 200", n)
	}
}

func TestRouteCompletion(t *testing.T) {
	t.Parallel()
	r := startRoute(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: fork, path: tests/fork}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs:
        - step: a
        - step: b
  - step: a
    tool: {kind: noop}
  - step: b
    tool: {kind: noop}
`)
	r.report("start", api.EvCommandCompleted, "started", "")
	if _, steps := r.open(); steps != "a,b" {
		t.Fatalf("issued %q, want a,b", steps)
	}
	// Another branch still running: wait.
	r.report("a", api.EvCommandCompleted, "first", "")
	if _, steps := r.open(); steps != "b" || r.execution().Status != api.ExecRunning {
		t.Fatalf("with b pending: open %q, execution %s; want b open and the execution running", steps, r.execution().Status)
	}
	// Last one out: done with its result.
	r.report("b", api.EvCommandCompleted, "made", "")
	if ex := r.execution(); ex.Status != api.ExecCompleted || string(ex.Result) != `"made"` {
		t.Errorf("execution %s with result %s; want completed with the last step's result", ex.Status, ex.Result)
	}
}

func TestRouteNoArcFires(t *testing.T) {
	t.Parallel()
	r := startRoute(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: p, path: p}
workflow:
  - step: start
    tool: {kind: python, code: x}
    next:
      arcs:
        - step: never
          when: "{{ false }}"
  - step: never
    tool: {kind: python, code: x}
`)
	r.report("start", api.EvCommandCompleted, 1, "")
	if ex := r.execution(); ex.Status != api.ExecCompleted || string(ex.Result) != "1" {
		t.Errorf("execution %s with result %s; want completed with the start result", ex.Status, ex.Result)
	}
}

func TestRouteFailures(t *testing.T) {
	t.Parallel()

	t.Run("step failed", func(t *testing.T) {
		t.Parallel()
		r := router(t, "exclusive")
		r.report("start", api.EvCommandFailed, nil, "connection refused")
		r.wantFailed("step start failed: connection refused")
		if _, steps := r.open(); steps != "" {
			t.Errorf("issued %q after a failure", steps)
		}
	})
	t.Run("when error", func(t *testing.T) {
		t.Parallel()
		r := router(t, "exclusive")
		r.finishStart(500)
		r.report("always", api.EvCommandCompleted, nil, "")
		r.wantFailed(`step "always" field next.arcs[0].when: syntax error`)
	})
	t.Run("terminal step with a broken tool elsewhere", func(t *testing.T) {
		t.Parallel()
		// created has no arcs: it completes the execution, and broken_tool,
		// never reached, is never rendered.
		r := router(t, "exclusive")
		r.finishStart(201)
		r.report("created", api.EvCommandCompleted, "made", "")
		if ex := r.execution(); ex.Status != api.ExecCompleted {
			t.Fatalf("execution %s (%s), want completed", ex.Status, ex.Error)
		}
	})
	t.Run("tool render error while advancing", func(t *testing.T) {
		t.Parallel()
		// Mend always's broken when, to false, so its unconditional arc to
		// broken_tool fires.
		src := strings.Replace(routerPlaybook(t, "exclusive"), "{{ start.status == }}", "{{ false }}", 1)
		r := startRoute(t, src)
		r.finishStart(500)
		r.report("always", api.EvCommandCompleted, nil, "")
		r.wantFailed(`step "broken_tool" field tool.headers.X-Trace`)
		r.wantFailed(`"trace_id" is undefined`)
		if _, steps := r.open(); steps != "" {
			t.Errorf("issued %q for a step that did not render", steps)
		}
	})
	t.Run("caller errors", func(t *testing.T) {
		t.Parallel()
		f, _ := newFlow(t)
		// A playbook with no steps, or an arc to a step it does not have,
		// is refused when registered, before anything can run it.
		for name, src := range map[string]string{
			"empty": "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: e, path: e}\nworkflow: []\n",
			"ghost": "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: g, path: g}\nworkflow:\n" +
				"  - step: start\n    tool: {kind: noop}\n    next:\n      arcs:\n        - step: ghost\n",
		} {
			if _, err := f.Register(t.Context(), src); !errors.Is(err, flow.ErrInvalidPlaybook) {
				t.Errorf("%s playbook: Register = %v, want ErrInvalidPlaybook", name, err)
			}
		}
		// A worker reports only terminal statuses (or started, heartbeat).
		r := router(t, "exclusive")
		byStep, _ := r.open()
		c := byStep["start"]
		claimed, err := r.flow.ClaimAndStart(r.ctx, c.EventID, "w1", r.ex.ExecutionID, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.flow.Apply(r.ctx, flow.Report{EventType: "command.running", EventID: c.EventID, WorkerID: "w1", Attempt: claimed.Attempt})
		if !errors.Is(err, flow.ErrInvalid) || !strings.Contains(err.Error(), "command.running") {
			t.Errorf("non-terminal status: Apply = %v, want ErrInvalid naming it", err)
		}
	})
}
