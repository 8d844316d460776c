package engine

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/playbook"
)

var testKinds = playbook.KindSet{
	"http":   {"method", "url", "headers", "body"},
	"python": {"code", "input"},
}

// routerPlaybook is the routing fixture the engine and flow tests share,
// with start's next in mode.
func routerPlaybook(t testing.TB, mode string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/router.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(b), "MODE", mode, 1)
}

// bundle is the fixture of an engine test: a parsed playbook and a scope.
type bundle struct {
	pb    *playbook.Playbook
	scope Scope
}

func setup(t testing.TB, mode string) *bundle {
	t.Helper()
	src := routerPlaybook(t, mode)
	pb, err := playbook.Parse("router.yaml", []byte(src), testKinds)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return &bundle{pb: pb, scope: Scope{ExecutionID: 7, Workload: pb.Workload, Results: map[string]any{}}}
}

// finish records a completed start step with the given HTTP status.
func (b *bundle) finish(status int) {
	b.scope.Results["start"] = map[string]any{"status": float64(status), "body": map[string]any{"id": 1.0}}
}

// The routing and rendering of whole executions is tested through
// flow.Service, which drives them (internal/flow/route_test.go); these
// tests look at what its callers cannot see.

func TestRenderToolError(t *testing.T) {
	t.Parallel()
	b := setup(t, "exclusive")
	_, err := RenderTool(b.pb.ByName["broken_tool"], b.scope)
	var te *TemplateError
	if !errors.As(err, &te) || te.Step != "broken_tool" || te.Field != "tool.headers.X-Trace" || !strings.Contains(te.Reason, `"trace_id" is undefined`) {
		t.Fatalf("RenderTool err = %#v", err)
	}
	for _, part := range []string{"broken_tool", "tool.headers.X-Trace", "trace_id"} {
		if !strings.Contains(te.Error(), part) {
			t.Errorf("error %q does not name %s", te.Error(), part)
		}
	}
	// The playbook's tool is a template shared by executions: untouched.
	if _, err := RenderTool(b.pb.StartStep(), b.scope); err != nil {
		t.Fatal(err)
	}
	if b.pb.StartStep().Tool["url"] != "{{ base_url }}/items/{{ execution_id }}" {
		t.Error("RenderTool modified the playbook")
	}
}

// BenchmarkAdvance is the engine's share of advancing past a step: route
// its arcs, then render the tool of the step that fired.
func BenchmarkAdvance(b *testing.B) {
	bb := setup(b, "exclusive")
	bb.finish(500) // the third (unconditional) arc fires
	start := bb.pb.StartStep()
	b.ReportAllocs()
	for b.Loop() {
		fired, err := NextSteps(bb.pb, start, bb.scope)
		if err != nil || len(fired) != 1 || fired[0].Step != "always" {
			b.Fatalf("fired = %+v, %v", fired, err)
		}
		if _, err := RenderTool(bb.pb.ByName[fired[0].Step], bb.scope); err != nil {
			b.Fatal(err)
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
