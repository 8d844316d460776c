package flow

import (
	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
)

// wireScope converts a scope for a command's payload (api.Payload).
func wireScope(s engine.Scope) *api.Scope {
	return &api.Scope{ExecutionID: s.ExecutionID, Workload: s.Workload, Results: s.Results, Context: s.Context, Extra: s.Extra}
}

func keychainMap(pb *playbook.Playbook) map[string]string {
	if len(pb.Keychain) == 0 {
		return nil
	}
	m := make(map[string]string, len(pb.Keychain))
	for _, k := range pb.Keychain {
		m[k.Name] = k.Credential
	}
	return m
}

// cursorPayload is what the drain slot index (0-based) of step's cursor
// loop carries: the cursor and frame, and the step's tasks (a single tool
// becomes a one-task list named after the step, its policy and assert
// applied per row by the worker).
func cursorPayload(step *playbook.Step, index int) (*api.Cursor, []api.Task) {
	l := step.Loop
	c := &api.Cursor{Iterator: l.Iterator, Slot: index + 1, MaxRows: max(l.Frame.MaxRows, 1),
		RowConcurrency: max(l.Frame.RowConcurrency, 1), Process: l.Frame.Process}
	if l.Cursor != nil {
		c.Kind, c.Auth, c.Claim = l.Cursor.Kind, l.Cursor.Auth, l.Cursor.Claim
	}
	if c.Process == "" {
		c.Process = playbook.FrameRow
	}
	if len(step.Tasks) == 0 {
		return c, []api.Task{{Name: step.Name, Tool: step.Tool, Policy: step.Policy, Assert: step.Assert}}
	}
	tasks := make([]api.Task, 0, len(step.Tasks))
	for _, t := range step.Tasks {
		tasks = append(tasks, api.Task{Name: t.Name, Tool: t.Tool, Set: t.Set, Policy: t.Policy, Assert: t.Assert})
	}
	return c, tasks
}
