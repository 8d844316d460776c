package server_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

// POST /api/executions/{id}/fail: the execution fails with playbook.failed
// carrying the reason, its commands are cancelled (the holder's next
// report is a 409), a second fail is 409 state_conflict, no reason 400.
func TestExecutionFail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.API.Register(ctx, oneStep); err != nil {
		t.Fatal(err)
	}
	st, err := b.API.Execute(ctx, "t/one", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := b.firstCommand(st.ExecutionID, "start")
	cl, err := b.API.Claim(ctx, cmd.EventID, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.API.Fail(ctx, st.ExecutionID, "  "); client.StatusOf(err) != 400 {
		t.Fatalf("fail without a reason: %v, want 400", err)
	}
	ex, err := b.API.Fail(ctx, st.ExecutionID, "stuck on a 500 since the upgrade; INC-42")
	if err != nil || ex.Status != api.ExecFailed || !strings.Contains(ex.Error, "INC-42") {
		t.Fatalf("fail = %+v, %v; want failed with the reason", ex, err)
	}
	evs, err := b.API.Events(ctx, st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if last.EventType != api.EvPlaybookFailed || !strings.Contains(last.Error, "INC-42") {
		t.Fatalf("last event %+v, want playbook.failed carrying the reason", last)
	}
	if c, err := b.API.Command(ctx, cmd.EventID); err != nil || c.Status != api.CmdCancelled {
		t.Fatalf("command after fail: %+v, %v; want cancelled", c, err)
	}
	if _, err := b.API.Report(ctx, api.Report{EventType: api.EvCommandCompleted, EventID: cmd.EventID, WorkerID: "w1", Attempt: cl.Attempt}); client.StatusOf(err) != 409 {
		t.Fatalf("report after fail: %v, want 409", err)
	}
	_, err = b.API.Fail(ctx, st.ExecutionID, "again")
	var ce *client.Error
	if client.StatusOf(err) != 409 || !errors.As(err, &ce) || ce.Code != "state_conflict" {
		t.Fatalf("second fail: %v, want 409 state_conflict", err)
	}
	if _, err := b.API.Fail(ctx, 12345, "nope"); client.StatusOf(err) != 404 {
		t.Fatalf("fail of a missing execution: %v, want 404", err)
	}
}
