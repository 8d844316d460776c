package server_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

const loopOfEight = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: eight
  path: t/eight
workflow:
  - step: start
    loop:
      in: "{{ range(8) | list }}"
      iterator: i
      spec:
        mode: parallel
        max_in_flight: 2
    tool:
      kind: noop
    next:
      arcs:
        - step: done
          when: "{{ event.name == 'loop.done' }}"
  - step: done
    tool:
      kind: noop
`

// Two servers on one database take turns completing one loop's iterations.
// Each keeps the execution's engine state in memory between completions;
// it must notice every change the other made (the execution's revision) or
// it would re-issue iterations the other already issued, or miss results.
func TestTwoServersAlternateOneLoop(t *testing.T) {
	t.Parallel()
	url := pgtest.NewSchema(t)
	servers := []*servertest.Harness{
		servertest.Start(t, func(c *config.Server) { c.DatabaseURL = url }),
		servertest.Start(t, func(c *config.Server) { c.DatabaseURL = url }),
	}
	ctx := t.Context()
	a := servers[0].API
	if _, err := a.Register(ctx, loopOfEight); err != nil {
		t.Fatal(err)
	}
	st, err := a.Execute(ctx, "t/eight", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	issuedIdx := map[int]int{} // loop index -> times issued
	done := map[int64]bool{}
	turn := 0
	// Each round drives every newly issued command until the execution ends.
	wait.For(t, 60*time.Second, func() error {
		ex, err := a.Execution(ctx, st.ExecutionID)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Status != api.ExecRunning {
			return nil
		}
		evs, err := a.Events(ctx, st.ExecutionID)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.EventType != api.EvCommandIssued || done[e.EventID] {
				continue
			}
			// Alternate servers for every claim-and-complete.
			srv := servers[turn%2].API
			turn++
			cl, err := srv.ClaimAndStart(ctx, e.EventID, "w", st.ExecutionID)
			if err != nil {
				t.Fatalf("claim %s: %v", e.CommandID, err)
			}
			done[e.EventID] = true
			res := json.RawMessage(`null`)
			if cl.Step == "start" {
				issuedIdx[cl.LoopIndex]++
				res = json.RawMessage(fmt.Sprintf(`{"i":%d}`, cl.LoopIndex))
			}
			if _, err := srv.Report(ctx, api.Report{EventType: "command.completed", EventID: e.EventID, ExecutionID: st.ExecutionID,
				WorkerID: "w", Attempt: cl.Attempt, Result: res}); err != nil {
				t.Fatalf("complete %s: %v", e.CommandID, err)
			}
		}
		return fmt.Errorf("execution %d still running", st.ExecutionID)
	})
	for i := range 8 {
		if issuedIdx[i] != 1 {
			t.Errorf("loop index %d issued %d times, want once (issued: %v)", i, issuedIdx[i], issuedIdx)
		}
	}
	evs, _ := a.Events(ctx, st.ExecutionID)
	loopDone := 0
	var loopResult string
	for _, e := range evs {
		if e.EventType == "loop.done" {
			loopDone++
			loopResult = string(e.Result)
		}
	}
	want := `[{"i":0},{"i":1},{"i":2},{"i":3},{"i":4},{"i":5},{"i":6},{"i":7}]`
	if loopDone != 1 || loopResult != want {
		t.Fatalf("loop.done fired %d times with %s; want once with %s", loopDone, loopResult, want)
	}
	ex, _ := a.Execution(ctx, st.ExecutionID)
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s (%s), want completed", ex.Status, ex.Error)
	}
	if turn < 9 {
		t.Fatalf("only %d completions alternated between the servers", turn)
	}
}
