package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/tools"
	"github.com/millrace/millrace/internal/worker"
)

// childPoll is how often a playbook tool checks on its child execution.
const childPoll = 200 * time.Millisecond

// Execute runs a command: its payload's timeout, the templates only a
// worker may render (keychain), and task lists. The local runtime uses it
// with its own Env. published is the context a task list assigned (ctx.*
// and bare `set` targets, as "ctx.<path>" with final values): the caller
// reports it with the result, and the server merges it into the
// execution's context, as NoETL does when a task sequence ends.
func Execute(parent context.Context, cl api.Command, env tools.Env) (result any, published map[string]any, err error) {
	p, err := api.DecodePayload(cl.Input)
	if err != nil {
		return nil, nil, &tools.Error{Kind: "worker", Message: "command payload is malformed: " + err.Error()}
	}
	ctx := parent
	if p.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(p.TimeoutSeconds*float64(time.Second)))
		defer cancel()
	}
	if e, ok := env.(*apiEnv); ok {
		e.key.set(p)
	}
	ctx = tools.WithEnv(ctx, env)
	var keychain map[string]any
	if len(p.Keychain) > 0 {
		if keychain, err = resolveKeychain(ctx, env, p.Keychain); err != nil {
			return nil, nil, err
		}
	}
	var res any
	if len(p.Tasks) == 0 {
		var cfg map[string]any
		if err := decodeExact(cl.Tool, &cfg); err != nil {
			return nil, nil, &tools.Error{Kind: "worker", Message: "command tool config is not a JSON object: " + err.Error()}
		}
		if p.Scope != nil && keychain != nil {
			v, err := engine.RenderAtWorker(cfg, payloadScope(ctx, cl, p), keychain)
			if err != nil {
				return nil, nil, &tools.Error{Kind: "template", Message: fmt.Sprintf("step %s: %v", cl.Step, err)}
			}
			cfg, _ = v.(map[string]any)
		}
		if err := engine.CheckExpects(p.Assert, cfg); err != nil {
			return nil, nil, &tools.Error{Kind: "assert", Message: fmt.Sprintf("step %s: %v", cl.Step, err)}
		}
		res, err = tools.Run(ctx, cfg)
		if err == nil {
			if aerr := engine.CheckReturns(p.Assert, res); aerr != nil {
				err = &tools.Error{Kind: "assert", Message: fmt.Sprintf("step %s: %v", cl.Step, aerr)}
			}
		}
	} else if p.Cursor != nil {
		res, published, err = runCursor(ctx, cl, p, keychain)
	} else {
		res, published, err = runTasks(ctx, cl, p, keychain)
	}
	if err != nil && ctx.Err() == context.DeadlineExceeded && parent.Err() == nil {
		return res, nil, &tools.Error{Kind: "timeout", Message: fmt.Sprintf("step %s exceeded its timeout of %gs", cl.Step, p.TimeoutSeconds), Retryable: true}
	}
	if err != nil {
		published = nil // a failed step assigns nothing
	}
	return res, published, err
}

// runTasks runs a task list. Each task sees the results of the tasks before
// it under their names; the step's result is the result of the last task
// that ran. A task's own `spec.policy` is applied here, in the worker: a
// retry runs the task again after its backoff, `continue` goes on with the
// next task (after a failure, with an error envelope as the task's result),
// `break` ends the list successfully, `jump` goes on at the task named by
// `to` (at most playbook.MaxTaskJumps times per run), `fail` fails the
// command. A task's `set` and its rules' `set` are visible to the later
// tasks of this run: ctx.<name> (and bare names) in the context, iter.<name>
// in `iter`, the run's own scope (one loop iteration's, in a loop). The
// context paths assigned are returned with their final values (published).
func runTasks(ctx context.Context, cl api.Command, p api.Payload, keychain map[string]any) (res any, published map[string]any, err error) {
	res, published, _, err = runTaskList(ctx, cl.Step, p.Tasks, payloadScope(ctx, cl, p), keychain)
	return res, published, err
}

// payloadScope is the scope a command's payload carries, bounded by the
// worker's budgets and ctx.
func payloadScope(ctx context.Context, cl api.Command, p api.Payload) engine.Scope {
	scope := engine.Scope{ExecutionID: cl.ExecutionID}
	if w := p.Scope; w != nil {
		scope = engine.Scope{ExecutionID: w.ExecutionID, Workload: w.Workload, Results: w.Results, Context: w.Context, Extra: w.Extra}
	}
	scope.Budget = budgetFor(ctx)
	return scope
}

// runTaskList is runTasks over tasks in scope, for the step named stepName;
// broke reports that a `do: break` ended the list.
func runTaskList(ctx context.Context, stepName string, tasks []api.Task, scope engine.Scope, keychain map[string]any) (res any, published map[string]any, broke bool, err error) {
	if _, ok := scope.Extra[playbook.IterScope].(map[string]any); !ok {
		scope = scope.With(playbook.IterScope, map[string]any{}) // a task list outside a loop has an iter scope too
	}
	step := &playbook.Step{Name: stepName}
	at := make(map[string]int, len(tasks))
	for i, t := range tasks {
		at[t.Name] = i
	}
	touched := map[string]bool{} // context paths assigned by this run
	publish := func() map[string]any { return assignedPaths(scope.Context, touched) }
	jumps := 0
	for i := 0; i < len(tasks); {
		t := tasks[i]
		r, outcome, d, err := runTask(ctx, stepName, t, &scope, keychain, touched)
		if err != nil {
			return r, nil, false, err
		}
		scope = scope.WithResult(t.Name, r)
		set, serr := engine.TaskSet(step, &playbook.Task{Name: t.Name, Set: t.Set}, scope, outcome)
		if serr != nil {
			return nil, nil, false, &tools.Error{Kind: "template", Message: serr.Error()}
		}
		scope = assign(scope, set, touched)
		res = r
		switch d.Do {
		case playbook.DoBreak:
			return res, publish(), true, nil
		case playbook.DoJump:
			next, ok := at[d.To]
			if !ok {
				return nil, nil, false, &tools.Error{Kind: "policy", Message: fmt.Sprintf("step %s task %s: jump to %q, which is not a task of this list", stepName, t.Name, d.To)}
			}
			if jumps++; jumps > playbook.MaxTaskJumps {
				return nil, nil, false, &tools.Error{Kind: "policy", Message: fmt.Sprintf("step %s task %s: more than %d jumps in one run of the task list (last to %q); the jump's condition never turned false",
					stepName, t.Name, playbook.MaxTaskJumps, d.To)}
			}
			i = next
		default:
			i++
		}
	}
	return res, publish(), false, nil
}

// assign is scope.Assign(set), noting in touched the context paths it
// assigns (iter.* targets stay in the run).
func assign(scope engine.Scope, set map[string]any, touched map[string]bool) engine.Scope {
	for k := range set {
		if !strings.HasPrefix(k, playbook.IterScope+".") {
			touched[strings.TrimPrefix(k, "ctx.")] = true
		}
	}
	return scope.Assign(set)
}

// assignedPaths is what a task list reports as its context: each path it
// assigned ("ctx.<path>") with its final value, and not whole top-level
// values, which would undo what a parallel branch assigned beside them
// since the command was issued. A path under another assigned path is
// covered by that one.
func assignedPaths(cx map[string]any, touched map[string]bool) map[string]any {
	if len(touched) == 0 {
		return nil
	}
	out := make(map[string]any, len(touched))
next:
	for path := range touched {
		segs := strings.Split(path, ".")
		for i := 1; i < len(segs); i++ {
			if touched[strings.Join(segs[:i], ".")] {
				continue next
			}
		}
		var v any = cx
		for _, s := range segs {
			m, _ := v.(map[string]any)
			v = m[s]
		}
		out["ctx."+path] = v
	}
	return out
}

// runTask runs one task under its policy and assert. The policy's `set` is
// assigned to *scope as each attempt is decided, so a retry sees it.
func runTask(ctx context.Context, step string, t api.Task, scope *engine.Scope, keychain map[string]any, touched map[string]bool) (any, engine.Outcome, engine.Decision, error) {
	for attempt := 1; ; attempt++ {
		v, err := engine.RenderAtWorker(t.Tool, *scope, keychain)
		if err != nil {
			return nil, engine.Outcome{}, engine.Decision{}, &tools.Error{Kind: "template", Message: fmt.Sprintf("step %s task %s: %v", step, t.Name, err)}
		}
		cfg, _ := v.(map[string]any)
		if err := engine.CheckExpects(t.Assert, cfg); err != nil {
			return nil, engine.Outcome{}, engine.Decision{}, &tools.Error{Kind: "assert", Message: fmt.Sprintf("step %s task %s: %v", step, t.Name, err)}
		}
		res, runErr := tools.Run(ctx, cfg)
		if runErr == nil {
			if err := engine.CheckReturns(t.Assert, res); err != nil {
				runErr = &tools.Error{Kind: "assert", Message: err.Error()}
			}
		}
		var te *tools.Error
		if runErr != nil && errors.As(runErr, &te) {
			te.Message = fmt.Sprintf("task %s: %s", t.Name, te.Message)
			if res == nil {
				res = te.Result // e.g. the http response of a 429: rules read output.http.status
			}
		}
		o := engine.Outcome{Status: engine.StatusCompleted, Result: res, Attempt: attempt}
		if runErr != nil {
			o.Status, o.Error = engine.StatusFailed, runErr.Error()
			if te != nil {
				o.Retryable = te.Retryable
			}
		}
		if t.Policy == nil {
			return res, o, engine.Decision{Do: playbook.DoContinue}, runErr
		}
		d, err := engine.Decide(t.Policy, *scope, o)
		if err != nil {
			return nil, o, d, &tools.Error{Kind: "template", Message: fmt.Sprintf("step %s task %s policy: %v", step, t.Name, err)}
		}
		*scope = assign(*scope, d.Set, touched)
		switch d.Do {
		case playbook.DoRetry:
			select {
			case <-ctx.Done():
				return nil, o, d, ctx.Err()
			case <-time.After(d.Delay):
			}
			continue
		case playbook.DoFail:
			msg := d.Reason
			if msg == "" {
				msg = o.Error
			}
			if msg == "" {
				msg = "the task's policy failed it"
			}
			return res, o, d, &tools.Error{Kind: "policy", Message: fmt.Sprintf("task %s: %s", t.Name, msg)}
		}
		if runErr != nil { // continue, break or jump past a failure: an error envelope
			res = map[string]any{"status": "error", "error": o.Error, "data": res}
		}
		return res, o, d, nil
	}
}

// apiEnv gives tools what they need through the server's API.
type apiEnv struct {
	api    *client.Client
	parent int64
	// command and attempt key the children this command starts (see
	// childKey); command 0 leaves them unkeyed.
	command int64
	attempt int
	key     childKey
}

func (e *apiEnv) Credential(ctx context.Context, name string) (map[string]any, error) {
	c, err := e.api.CredentialGet(ctx, name, true)
	if err != nil {
		if client.StatusOf(err) == http.StatusNotFound {
			return nil, &tools.Error{Kind: "credential", Message: fmt.Sprintf("credential %q does not exist; add it with `millrace credential add %s`", name, name)}
		}
		return nil, &tools.Error{Kind: "credential", Message: err.Error(), Retryable: client.Temporary(err)}
	}
	return c.Data, nil
}

// resolveKeychain resolves the playbook's keychain: template name -> fields.
func resolveKeychain(ctx context.Context, env tools.Env, names map[string]string) (map[string]any, error) {
	out := make(map[string]any, len(names))
	for alias, cred := range names {
		data, err := env.Credential(ctx, cred)
		if err != nil {
			return nil, err
		}
		out[alias] = data
	}
	return out, nil
}

// RunPlaybook starts a child execution (or finds the one this command
// started before: a re-run after a worker's death or a release waits for
// that child instead of starting a second) and waits for it. If the step's
// or the tool's timeout ends the wait, the child is cancelled too; a lost
// lease or a shutdown leaves it running for the command's next attempt (a
// parent that fails cancels its running children itself).
func (e *apiEnv) RunPlaybook(ctx context.Context, req tools.ChildRequest) (any, error) {
	in := api.ExecuteRequest{Path: req.Path, Version: req.Version, Payload: req.Payload, ParentExecutionID: e.parent}
	if task, ok := e.key.next(); ok && e.command != 0 {
		in.ParentCommandID, in.ParentTask, in.ParentAttempt = e.command, task, e.attempt
	}
	st, err := e.api.Start(ctx, in)
	if err != nil {
		retry := client.StatusOf(err) == 0 || client.StatusOf(err) >= 500
		return nil, &tools.Error{Kind: "playbook", Message: fmt.Sprintf("start child %s: %v", req.Path, err), Retryable: retry}
	}
	t := time.NewTicker(childPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				cctx, cancel := context.WithTimeout(context.Background(), worker.ReleaseTimeout)
				_, _ = e.api.Cancel(cctx, st.ExecutionID)
				cancel()
			}
			return nil, ctx.Err()
		case <-t.C:
		}
		ex, err := e.api.Execution(ctx, st.ExecutionID)
		if err != nil {
			continue // server restarting: keep waiting
		}
		switch ex.Status {
		case api.ExecRunning:
			continue
		case api.ExecCompleted:
			if req.ReturnStep != "" {
				return e.stepResult(ctx, st.ExecutionID, req.ReturnStep)
			}
			return decodeJSON(ex.Result)
		default:
			return nil, &tools.Error{Kind: "playbook", Message: fmt.Sprintf("child execution %d of %s %s: %s", st.ExecutionID, req.Path, ex.Status, ex.Error)}
		}
	}
}

// stepResult is the result of the last completed command of step.
func (e *apiEnv) stepResult(ctx context.Context, execID int64, step string) (any, error) {
	evs, err := e.api.Events(ctx, execID)
	if err != nil {
		return nil, &tools.Error{Kind: "playbook", Message: err.Error(), Retryable: true}
	}
	var found json.RawMessage
	ok := false
	for _, ev := range evs {
		if ev.Step == step && (ev.EventType == api.EvCommandCompleted || ev.EventType == api.EvLoopDone) {
			found, ok = ev.Result, true
		}
	}
	if !ok {
		return nil, &tools.Error{Kind: "playbook", Message: fmt.Sprintf("child execution %d never completed return_step %q", execID, step)}
	}
	return decodeJSON(found)
}

func decodeJSON(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var v any
	if err := decodeExact(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// decodeExact decodes JSON keeping numbers as json.Number: execution ids
// and other 64-bit integers exceed float64's 2^53 and would come back
// altered in a tool's config or a child's result.
func decodeExact(raw []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return d.Decode(v)
}
