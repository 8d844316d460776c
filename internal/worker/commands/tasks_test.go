package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/tools"
)

// runStep parses a one-step playbook and runs its task list the way a
// worker (or the local runtime) does, with scope as the server would send
// it (loop items bound when the step loops: iteration index).
func runStep(t *testing.T, src string, index int) (any, map[string]any, error) {
	t.Helper()
	pb, err := playbook.Parse("tasks.yaml", []byte(src), tools.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	step := pb.Steps[0]
	scope := engine.Scope{ExecutionID: 7, Workload: pb.Workload, Results: map[string]any{}}
	if step.Loop != nil {
		items, err := engine.LoopItems(step, scope)
		if err != nil {
			t.Fatal(err)
		}
		scope = engine.IterationScope(scope, step, items, index)
	}
	p := api.Payload{Scope: &api.Scope{ExecutionID: scope.ExecutionID, Workload: scope.Workload, Results: scope.Results, Context: scope.Context, Extra: scope.Extra}}
	for _, tk := range step.Tasks {
		p.Tasks = append(p.Tasks, api.Task{Name: tk.Name, Tool: tk.Tool, Set: tk.Set, Policy: tk.Policy, Assert: tk.Assert})
	}
	// Through JSON, as the payload travels.
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return Execute(context.Background(), api.Command{ExecutionID: 7, Step: step.Name, Tool: json.RawMessage(`{"kind":"tasks"}`), Input: raw}, nil)
}

// A `then.set` in a task's policy rule is visible to the later tasks of the
// list (issue 10: it was dropped, and the next task failed with "attribute
// not found").
func TestTaskRuleSetReachesLaterTasks(t *testing.T) {
	t.Parallel()
	res, published, err := runStep(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: t, path: t/t}
workflow:
  - step: start
    tool:
      - name: first
        kind: noop
        result: {n: 41}
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'success' }}"
                then: {do: continue, set: {ctx.answer: "{{ output.data.n + 1 }}", plain: yes}}
      - name: second
        kind: noop
        result: {answer: "{{ ctx.answer }}", top: "{{ answer }}", plain: "{{ plain }}"}
`, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(res)
	if string(got) != `{"answer":42,"plain":"yes","top":42}` {
		t.Fatalf("result %s; want the rule's set visible to the next task", got)
	}
	// and published for the execution's context; iter.* stays in the run.
	if got, _ := json.Marshal(published); string(got) != `{"ctx.answer":42,"ctx.plain":"yes"}` {
		t.Fatalf("published %s; want the context names the list assigned", got)
	}
}

// NoETL's in-step pagination: iter.* set by one task's rule is read by the
// next; `do: jump` goes back to fetch the next page; `do: break` ends the
// iteration successfully. Each loop iteration has its own iter scope.
func TestTaskListPaginatesWithIterJumpAndBreak(t *testing.T) {
	t.Parallel()
	const src = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: t, path: t/t}
workload:
  pages: {a: 3, b: 1}
workflow:
  - step: fetch_all
    loop: {in: "{{ ['a', 'b', 'skip'] }}", iterator: item}
    tool:
      - name: init
        kind: noop
        spec:
          policy:
            rules:
              - when: "{{ iter.item == 'skip' }}"
                then: {do: break, set: {iter.skipped: true}}
              - else:
                  then: {do: continue, set: {iter.page: 1, iter.seen: []}}
      - name: fetch_page
        kind: noop
        result: {page: "{{ iter.page }}", total: "{{ pages[iter.item] }}"}
        spec:
          policy:
            rules:
              - else:
                  then:
                    do: continue
                    set:
                      iter.has_more: "{{ output.data.page < output.data.total }}"
                      iter.seen: "{{ iter.seen + [output.data.page] }}"
      - name: paginate
        kind: noop
        spec:
          policy:
            rules:
              - when: "{{ iter.has_more }}"
                then: {do: jump, to: fetch_page, set: {iter.page: "{{ iter.page + 1 }}"}}
              - else: {do: continue}
      - name: done
        kind: noop
        result: {item: "{{ iter.item }}", index: "{{ iter.index }}", seen: "{{ iter.seen }}", last: "{{ fetch_page.page }}"}
`
	want := []string{
		`{"index":0,"item":"a","last":3,"seen":[1,2,3]}`,
		`{"index":1,"item":"b","last":1,"seen":[1]}`,
		`{"status":"noop","step":"fetch_all"}`,
	}
	for i, w := range want {
		res, _, err := runStep(t, src, i)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		got, _ := json.Marshal(res)
		if i == 2 { // broke at init: the result is init's own
			var m map[string]any
			_ = json.Unmarshal(got, &m)
			if _, ok := m["seen"]; ok {
				t.Fatalf("iteration 2 result %s; want the break to skip the later tasks", got)
			}
			continue
		}
		if string(got) != w {
			t.Fatalf("iteration %d result %s; want %s", i, got, w)
		}
	}
}

// A jump whose condition never turns false ends with a clear failure after
// playbook.MaxTaskJumps jumps.
func TestEndlessJumpFails(t *testing.T) {
	t.Parallel()
	_, _, err := runStep(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: t, path: t/t}
workflow:
  - step: start
    tool:
      - name: a
        kind: noop
      - name: b
        kind: noop
        spec:
          policy:
            rules:
              - else: {do: jump, to: a}
`, 0)
	if err == nil || !strings.Contains(err.Error(), "more than 10000 jumps") || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("err %v; want the jump bound named", err)
	}
}

// A task list publishes the context paths it assigned, not whole top-level
// values: its worker saw the context as it was when the command was
// issued, and sending back all of ctx.stats would undo what a parallel
// branch assigned to ctx.stats.b meanwhile. A path under one it also
// assigned whole is covered by that one.
func TestTaskListPublishesAssignedPaths(t *testing.T) {
	t.Parallel()
	_, published, err := runStep(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: t, path: t/t}
workflow:
  - step: start
    tool:
      - name: first
        kind: noop
        set: {ctx.stats.a: 1, ctx.page: {n: 1, size: 10}, plain: yes}
      - name: second
        kind: noop
        set: {ctx.stats.a: 2, ctx.page.n: 2, iter.k: 3}
`, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(published); string(got) != `{"ctx.page":{"n":2,"size":10},"ctx.plain":"yes","ctx.stats.a":2}` {
		t.Fatalf("published %s; want the assigned paths with their final values", got)
	}
}

// An earlier task's result reads as a step's result does: `.data` is an
// http task's body (NoETL's http_to_postgres_direct loops over
// `fetch_posts.data` in the next task) and a mapping result's own self.
func TestTaskResultReadsAsAStepResult(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[{"id": 1}, {"id": 2}]`)
	}))
	t.Cleanup(srv.Close)
	res, _, err := runStep(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: t, path: t/t}
workload: {url: "`+srv.URL+`"}
workflow:
  - step: start
    tool:
      - name: fetch_posts
        kind: http
        url: "{{ url }}"
      - name: first
        kind: noop
        result: {n: 41}
      - name: last
        kind: noop
        result:
          ids: "{% for p in fetch_posts.data %}{{ p.id }};{% endfor %}"
          status: "{{ fetch_posts.status }}"
          n: "{{ first.data.n }}"
`, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(res); string(got) != `{"ids":"1;2;","n":41,"status":200}` {
		t.Fatalf("result %s; want fetch_posts.data as the body and first.data as first's result", got)
	}
}
