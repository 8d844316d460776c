package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/playbook"
)

var testKinds = playbook.KindSet{
	"http":   {"method", "url", "headers", "body"},
	"python": {"code", "input"},
}

const routerPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: router, path: tests/router}
workload:
  base_url: https://api.example.com
  token: s3cret
workflow:
  - step: start
    tool:
      kind: http
      method: GET
      url: "{{ base_url }}/items/{{ execution_id }}"
      headers:
        Authorization: "Bearer {{ token | b64encode }}"
    next:
      spec: {mode: MODE}
      arcs:
        - step: ok
          when: "{{ start.status == 200 }}"
        - step: created
          when: start.status == 201
        - step: always
  - step: ok
    tool: {kind: python, code: "print('ok')", input: {body: "{{ start.body }}"}}
  - step: created
    tool: {kind: python, code: "print('created')"}
  - step: always
    tool: {kind: python, code: "print('always')", input: {n: "{{ start.status }}"}}
    next:
      arcs:
        - step: broken_when
          when: "{{ start.status == }}"
        - step: broken_tool
  - step: broken_when
    tool: {kind: python, code: x}
  - step: broken_tool
    tool:
      kind: http
      url: "{{ base_url }}/x"
      headers: {X-Trace: "{{ trace_id }}"}
`

// bundle is the fixture of an engine test: a parsed playbook and a scope.
type bundle struct {
	pb    *playbook.Playbook
	scope Scope
}

func setup(t testing.TB, mode string) *bundle {
	t.Helper()
	src := strings.Replace(routerPlaybook, "MODE", mode, 1)
	pb, err := playbook.Parse("router.yaml", []byte(src), testKinds)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return &bundle{pb: pb, scope: Scope{ExecutionID: 7, Workload: pb.Workload, Results: map[string]any{}}}
}

// finish records a completed start step with the given HTTP status.
func (b *bundle) finish(status int) Finished {
	res := map[string]any{"status": float64(status), "body": map[string]any{"id": 1.0}}
	b.scope.Results["start"] = res
	return Finished{Step: "start", Status: StatusCompleted, Result: res}
}

func issued(p Plan) string {
	var names []string
	for _, i := range p.Issue {
		names = append(names, i.Step)
	}
	return strings.Join(names, ",")
}

func TestBegin(t *testing.T) {
	t.Parallel()
	b := setup(t, "exclusive")

	plan, err := Begin(b.pb, b.scope)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Done || len(plan.Issue) != 1 || plan.Issue[0].Step != "start" {
		t.Fatalf("plan = %+v", plan)
	}
	tool := plan.Issue[0].Tool
	if tool["kind"] != "http" || tool["method"] != "GET" || tool["url"] != "https://api.example.com/items/7" {
		t.Errorf("tool = %#v", tool)
	}
	if h := tool["headers"].(map[string]any); h["Authorization"] != "Bearer czNjcmV0" {
		t.Errorf("headers = %#v", h)
	}
	// The playbook's tool is a template shared by executions: untouched.
	if b.pb.StartStep().Tool["url"] != "{{ base_url }}/items/{{ execution_id }}" {
		t.Error("Begin modified the playbook")
	}

	b.scope.Workload = map[string]any{"token": "x"} // base_url missing
	plan, err = Begin(b.pb, b.scope)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Done || !plan.Failed || !strings.Contains(plan.Error, `step "start" field tool.url: variable "base_url" is undefined`) {
		t.Errorf("plan = %+v, want failure naming step, field and variable", plan)
	}
}

func TestAdvanceExclusive(t *testing.T) {
	t.Parallel()

	for status, want := range map[int]string{200: "ok", 201: "created", 500: "always"} {
		b := setup(t, "exclusive")
		plan, err := Advance(b.pb, b.scope, b.finish(status), 0)
		if err != nil {
			t.Fatal(err)
		}
		if plan.Done || issued(plan) != want {
			t.Errorf("status %d: plan = %+v, want only %s issued", status, plan, want)
		}
	}

	// Earlier results are visible to the issued step's tool, natively.
	b := setup(t, "exclusive")
	plan, _ := Advance(b.pb, b.scope, b.finish(200), 0)
	if body := plan.Issue[0].Tool["input"].(map[string]any)["body"]; body.(map[string]any)["id"] != 1 {
		t.Errorf("ok input body = %#v, want the start result's body mapping", body)
	}
}

func TestAdvanceInclusive(t *testing.T) {
	t.Parallel()
	b := setup(t, "inclusive")

	plan, err := Advance(b.pb, b.scope, b.finish(200), 0)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Done || issued(plan) != "ok,always" {
		t.Errorf("plan = %+v, want ok and always issued", plan)
	}
	if n := plan.Issue[1].Tool["input"].(map[string]any)["n"]; n != 200 {
		t.Errorf("always input n = %#v, want 200", n)
	}
}

func TestAdvanceCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t, "exclusive")
	b.scope.Results["created"] = "made"
	f := Finished{Step: "created", Status: StatusCompleted, Result: "made"}

	// Other branches still running: wait.
	plan, err := Advance(b.pb, b.scope, f, 2)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Done || len(plan.Issue) != 0 {
		t.Errorf("with pending commands plan = %+v, want nothing to do", plan)
	}
	// Last one out: done with its result.
	plan, err = Advance(b.pb, b.scope, f, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Done || plan.Failed || plan.Result != "made" || len(plan.Issue) != 0 {
		t.Errorf("plan = %+v, want done with result made", plan)
	}
}

func TestAdvanceNoArcFires(t *testing.T) {
	t.Parallel()
	pb, err := playbook.Parse("p.yaml", []byte(`apiVersion: noetl.io/v2
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
`), testKinds)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Advance(pb, Scope{Results: map[string]any{"start": 1}}, Finished{Step: "start", Status: StatusCompleted, Result: 1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Done || plan.Failed || plan.Result != 1 {
		t.Errorf("plan = %+v, want done with the start result", plan)
	}
}

func TestAdvanceFailures(t *testing.T) {
	t.Parallel()

	t.Run("step failed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "exclusive")
		plan, err := Advance(b.pb, b.scope, Finished{Step: "start", Status: StatusFailed, Error: "connection refused"}, 3)
		if err != nil {
			t.Fatal(err)
		}
		if !plan.Done || !plan.Failed || plan.Error != "step start failed: connection refused" || len(plan.Issue) != 0 {
			t.Errorf("plan = %+v", plan)
		}
	})
	t.Run("when error", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "exclusive")
		b.finish(200)
		plan, err := Advance(b.pb, b.scope, Finished{Step: "always", Status: StatusCompleted}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !plan.Done || !plan.Failed || !strings.Contains(plan.Error, `step "always" field next.arcs[0].when: syntax error`) {
			t.Errorf("plan = %+v", plan)
		}
	})
	t.Run("tool render error", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "exclusive")
		plan, err := Advance(b.pb, b.scope, Finished{Step: "broken_when", Status: StatusCompleted}, 0)
		if err != nil || !plan.Done || plan.Failed {
			t.Fatalf("terminal step: plan = %+v, %v", plan, err)
		}
		_, err = RenderTool(b.pb.ByName["broken_tool"], b.scope)
		var te *TemplateError
		if !errors.As(err, &te) || te.Step != "broken_tool" || te.Field != "tool.headers.X-Trace" || !strings.Contains(te.Reason, `"trace_id" is undefined`) {
			t.Fatalf("RenderTool err = %#v", err)
		}
		for _, part := range []string{"broken_tool", "tool.headers.X-Trace", "trace_id"} {
			if !strings.Contains(te.Error(), part) {
				t.Errorf("error %q does not name %s", te.Error(), part)
			}
		}
	})
	t.Run("tool render error while advancing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "exclusive")
		// Drop always's broken when so its unconditional arc to broken_tool fires.
		b.pb.ByName["always"].Next.Arcs = b.pb.ByName["always"].Next.Arcs[1:]
		b.finish(500)
		plan, err := Advance(b.pb, b.scope, Finished{Step: "always", Status: StatusCompleted}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !plan.Done || !plan.Failed || !strings.Contains(plan.Error, `step "broken_tool" field tool.headers.X-Trace`) {
			t.Errorf("plan = %+v", plan)
		}
	})
	t.Run("caller errors", func(t *testing.T) {
		t.Parallel()
		b := setup(t, "exclusive")
		if _, err := Advance(b.pb, b.scope, Finished{Step: "ghost", Status: StatusCompleted}, 0); err == nil || !strings.Contains(err.Error(), "ghost") {
			t.Errorf("unknown step err = %v", err)
		}
		if _, err := Advance(b.pb, b.scope, Finished{Step: "start", Status: "running"}, 0); err == nil || !strings.Contains(err.Error(), "running") {
			t.Errorf("non-terminal status err = %v", err)
		}
		if _, err := Begin(&playbook.Playbook{}, b.scope); err == nil {
			t.Error("Begin on an empty playbook returned no error")
		}
	})
}

func BenchmarkAdvance(b *testing.B) {
	bb := setup(b, "exclusive")
	f := bb.finish(500) // the third (unconditional) arc fires
	b.ReportAllocs()
	for b.Loop() {
		plan, err := Advance(bb.pb, bb.scope, f, 0)
		if err != nil || issued(plan) != "always" {
			b.Fatalf("plan = %+v, %v", plan, err)
		}
	}
}

func BenchmarkRender(b *testing.B) {
	s := testScope(b)
	b.Run("string", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Render("https://api/{{ fetch.data.name }}/{{ execution_id }}", s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("native", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Render("{{ fetch.data }}", s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Render("https://api/static", s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
