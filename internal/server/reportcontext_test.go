package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
)

const taskList = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: tl
  path: t/tl
workflow:
  - step: start
    tool:
      - name: a
        kind: noop
    next:
      arcs:
        - step: second
  - step: second
    tool:
      kind: noop
`

// A report's context (what a task list assigned) is checked at the
// boundary, kept exact (64-bit ids), and applied once, by the lease holder.
func TestReportContextBoundary(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.API.Register(ctx, taskList); err != nil {
		t.Fatal(err)
	}
	st, err := b.API.Execute(ctx, "t/tl", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := b.firstCommand(st.ExecutionID, "start")
	cl, err := b.API.ClaimAndStart(ctx, cmd.EventID, "w1", st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	post := func(worker string, attempt int, context string) (int, map[string]any) {
		return b.raw("POST", "/api/events", fmt.Appendf(nil,
			`{"event_type":"command.completed","event_id":%d,"worker_id":%q,"attempt":%d,"context":%s}`, cl.EventID, worker, attempt, context))
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"":1}`, `{"a":1}`, `{"ctx.":1}`, `{"ctx.a..b":1}`, `{"ctx.a b":1}`} {
		if status, body := post("w1", cl.Attempt, bad); status != 400 || !strings.Contains(errMsg(body), "context") {
			t.Errorf("context %s: %d %v, want 400 naming the context", bad, status, body)
		}
	}
	// Not the holder: refused, nothing merged.
	if status, body := post("w2", cl.Attempt, `{"ctx.stolen":1}`); status != 409 {
		t.Fatalf("non-holder: %d %v, want 409", status, body)
	}
	if status, body := post("w1", cl.Attempt, `{"ctx.id":9007199254740993,"ctx.page.n":2}`); status != 200 {
		t.Fatalf("holder: %d %v", status, body)
	}
	// A retried report (the ack was lost) is refused and merges nothing again.
	if status, body := post("w1", cl.Attempt, `{"ctx.id":1}`); status != 409 {
		t.Fatalf("repeated report: %d %v, want 409", status, body)
	}
	b.firstCommand(st.ExecutionID, "second")
	ex, err := b.API.Execution(ctx, st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(ex.Context); got != `{"id":9007199254740993,"page":{"n":2}}` {
		t.Fatalf("context = %s, want the id exact and nothing from refused reports", got)
	}
	evs, _ := b.API.Events(ctx, st.ExecutionID)
	n := 0
	for _, e := range evs {
		if e.EventType == api.EvContextUpdated {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d context.updated events, want 1", n)
	}
}

// Only a task list assigns context: a report of any other command that
// carries one is refused.
func TestReportContextOnlyFromTaskLists(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.API.Register(ctx, twoSteps); err != nil {
		t.Fatal(err)
	}
	st, err := b.API.Execute(ctx, "t/two", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := b.firstCommand(st.ExecutionID, "start")
	cl, err := b.API.ClaimAndStart(ctx, cmd.EventID, "w1", st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.API.Report(ctx, api.Report{EventType: api.EvCommandCompleted, EventID: cl.EventID, WorkerID: "w1", Attempt: cl.Attempt,
		Context: map[string]any{"ctx.x": 1}})
	if err == nil || !strings.Contains(err.Error(), "task list") {
		t.Fatalf("context from a plain tool's report: %v, want refused", err)
	}
	ex, _ := b.API.Execution(ctx, st.ExecutionID)
	if len(ex.Context) > 0 && string(ex.Context) != "null" {
		t.Fatalf("context = %s, want none", ex.Context)
	}
}
