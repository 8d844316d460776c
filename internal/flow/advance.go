package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/store"
)

// run is the state of one execution inside one transaction: everything the
// engine needs, rebuilt from durable rows (never from memory), so a server
// restart or a second server sees exactly the same thing.
type run struct {
	s     *Service
	ctx   context.Context
	tx    store.Tx
	exec  *store.Execution
	pb    *playbook.Playbook
	now   time.Time
	scope engine.Scope
	cmds  []store.Command
	loops map[int64]store.Loop
	// issued counts commands issued in this transaction (to wake the relay).
	issued int
	// finishedResult is the result of the last step that finished here.
	finishedResult any
	// items holds decoded loop items by loop id.
	items map[int64][]any
	// graph is the playbook's static shape (which steps are joins).
	graph *engine.Graph
	// arrived holds, per join an arc has reached, the round of its latest
	// arrival: how many times the join had started then. The join waits
	// while that equals how many times it has started (see joins.go).
	arrived map[string]int
}

func (s *Service) loadRun(ctx context.Context, tx store.Tx, exec *store.Execution, pb *playbook.Playbook, now time.Time) (*run, error) {
	return s.buildRun(ctx, tx, exec, pb, now, true)
}

// newRun is loadRun for an execution inserted in this transaction: it has
// no commands or loops yet, so there is nothing to read.
func (s *Service) newRun(ctx context.Context, tx store.Tx, exec *store.Execution, pb *playbook.Playbook, now time.Time) (*run, error) {
	return s.buildRun(ctx, tx, exec, pb, now, false)
}

// hasLoops reports whether any step of pb loops; only then can the
// execution have loop rows worth reading.
func hasLoops(pb *playbook.Playbook) bool {
	for _, st := range pb.Steps {
		if st.Loop != nil {
			return true
		}
	}
	return false
}

func (s *Service) buildRun(ctx context.Context, tx store.Tx, exec *store.Execution, pb *playbook.Playbook, now time.Time, read bool) (*run, error) {
	r := &run{s: s, ctx: ctx, tx: tx, exec: exec, pb: pb, now: now, loops: map[int64]store.Loop{}, items: map[int64][]any{},
		graph: s.graphFor(pb), arrived: map[string]int{}}
	var wl map[string]any
	if len(exec.Workload) > 0 {
		if err := json.Unmarshal(exec.Workload, &wl); err != nil {
			return nil, fmt.Errorf("decode workload of %d: %w", exec.ExecutionID, err)
		}
	}
	var cx map[string]any
	if len(exec.Context) > 0 {
		if err := json.Unmarshal(exec.Context, &cx); err != nil {
			return nil, fmt.Errorf("decode context of %d: %w", exec.ExecutionID, err)
		}
	}
	// Each read is a round trip on the write path: skip those that cannot
	// find anything.
	var cmds []store.Command
	var loops []store.Loop
	var err error
	if read {
		if cmds, err = tx.CommandListByExecution(ctx, exec.ExecutionID); err != nil {
			return nil, err
		}
	}
	if read && hasLoops(pb) {
		if loops, err = tx.LoopListByExecution(ctx, exec.ExecutionID); err != nil {
			return nil, err
		}
	}
	if read && len(r.graph.Joins()) > 0 {
		if err := r.readArrivals(); err != nil {
			return nil, err
		}
	}
	r.cmds = cmds
	results := map[string]any{}
	for _, c := range cmds { // event_id order: a later run of a step wins
		if c.Status != api.CmdCompleted || c.LoopID != 0 {
			continue
		}
		v, err := s.decodeResult(ctx, tx, c.Result)
		if err != nil {
			return nil, fmt.Errorf("result of %s: %w", c.CommandID, err)
		}
		results[c.Step] = v
	}
	for _, l := range loops {
		r.loops[l.LoopID] = l
		if l.Status != api.LoopDone {
			continue
		}
		v, err := s.decodeResult(ctx, tx, l.Result)
		if err != nil {
			return nil, fmt.Errorf("result of loop %s: %w", l.Step, err)
		}
		results[l.Step] = v
	}
	r.scope = engine.Scope{ExecutionID: exec.ExecutionID, Workload: wl, Results: results, Context: cx, Budget: s.budget(ctx)}
	return r, nil
}

// runFromState is loadRun from a cached state (see statecache.go).
func (s *Service) runFromState(ctx context.Context, tx store.Tx, exec *store.Execution, pb *playbook.Playbook, now time.Time, st *runState) *run {
	return &run{s: s, ctx: ctx, tx: tx, exec: exec, pb: pb, now: now, cmds: st.cmds, loops: st.loops, items: st.items,
		graph: s.graphFor(pb), arrived: st.arrived,
		scope: engine.Scope{ExecutionID: exec.ExecutionID, Workload: st.workload, Results: st.results, Context: st.context, Budget: s.budget(ctx)}}
}

// failRun ends the execution as failed with msg.
func (r *run) fail(msg string) error {
	return r.finishExecution(engine.Plan{Done: true, Failed: true, Error: msg})
}

func (r *run) finishExecution(plan engine.Plan) error {
	if plan.Result == nil && !plan.Failed {
		plan.Result = r.finishedResult
	}
	n, err := r.s.apply(r.ctx, r.tx, r.exec, plan, r.now)
	r.issued += n
	return err
}

// startStep issues the work of a step: one command, or a loop's first
// iterations.
func (r *run) startStep(step *playbook.Step, scope engine.Scope) error {
	if step.Loop == nil {
		return r.issue(step, scope, 0, 0, 0, r.now)
	}
	cursor := step.Loop.Mode == playbook.LoopCursor
	var items []any
	var err error
	if !cursor {
		if items, err = engine.LoopItems(step, scope); err != nil {
			return r.renderFailed(err)
		}
	}
	maxIn := step.Loop.MaxInFlight
	if step.Loop.MaxInFlightExpr != "" && (step.Loop.Mode == playbook.LoopParallel || cursor) {
		if maxIn, err = engine.LoopMaxInFlight(step, scope); err != nil {
			return r.renderFailed(err)
		}
	}
	switch {
	case cursor:
		// A cursor loop is max_in_flight drain slots, all started now; its
		// items are the slot numbers (see cursorPayload).
		items = make([]any, max(maxIn, 1))
		for i := range items {
			items[i] = i + 1
		}
		maxIn = len(items)
	case step.Loop.Mode != playbook.LoopParallel:
		maxIn = 1
	case maxIn <= 0:
		maxIn = len(items)
	}
	raw, err := json.Marshal(items)
	if err != nil {
		return r.fail(fmt.Sprintf("step %s: loop items are not JSON-encodable: %v", step.Name, err))
	}
	l := store.Loop{LoopID: r.s.ids.Next(), ExecutionID: r.exec.ExecutionID, Step: step.Name, Total: len(items),
		Mode: step.Loop.Mode, MaxInFlight: maxIn, Items: raw, Status: api.LoopRunning, CreatedAt: r.now, UpdatedAt: r.now}
	if err := r.tx.LoopInsert(r.ctx, l); err != nil {
		return err
	}
	r.loops[l.LoopID] = l
	if err := r.s.event(r.ctx, r.tx, store.Event{EventID: l.LoopID, ExecutionID: r.exec.ExecutionID, EventType: api.EvLoopStarted,
		Step: step.Name, Status: string(api.LoopRunning), Result: json.RawMessage(fmt.Sprintf(`{"total":%d,"mode":%q,"max_in_flight":%d}`, l.Total, l.Mode, maxIn))}, r.now); err != nil {
		return err
	}
	if len(items) == 0 {
		return r.finishLoop(step, l, []any{})
	}
	for i := 0; i < min(maxIn, len(items)); i++ {
		if err := r.issue(step, engine.IterationScope(scope, step, items, i), l.LoopID, i, 0, r.now); err != nil {
			return err
		}
	}
	return nil
}

// issue writes one command for step (a loop iteration when loopID != 0).
// Once the execution has ended (a render error failed it a moment ago),
// nothing more is issued.
func (r *run) issue(step *playbook.Step, scope engine.Scope, loopID int64, index, retry int, availableAt time.Time) error {
	if r.exec.Status != api.ExecRunning {
		return nil
	}
	var tool map[string]any
	var payload api.Payload
	if step.Timeout > 0 {
		payload.TimeoutSeconds = step.Timeout.Seconds()
	}
	payload.Keychain = keychainMap(r.pb)
	payload.Assert = step.Assert
	if step.Loop != nil && step.Loop.Mode == playbook.LoopCursor {
		// The worker renders the claim and, per row, the tasks: a single
		// tool runs as a one-task list under its own policy.
		tool = map[string]any{"kind": "cursor"}
		payload.Cursor, payload.Tasks = cursorPayload(step, index)
		payload.Assert = nil
		payload.Scope = wireScope(scope)
	} else if len(step.Tasks) > 0 {
		tool = map[string]any{"kind": "tasks"}
		for _, t := range step.Tasks {
			payload.Tasks = append(payload.Tasks, api.Task{Name: t.Name, Tool: t.Tool, Set: t.Set, Policy: t.Policy, Assert: t.Assert})
		}
		payload.Scope = wireScope(scope)
	} else if len(payload.Keychain) > 0 {
		// Secrets are rendered by the worker, from the playbook's own
		// template text: never from already-rendered data, which could
		// smuggle in a `{{ keychain.x }}` of its own.
		tool = step.Tool
		payload.Scope = wireScope(scope)
	} else {
		var err error
		if tool, err = engine.RenderTool(step, scope); err != nil {
			return r.renderFailed(err)
		}
	}
	tj, err := json.Marshal(tool)
	if err != nil {
		return fmt.Errorf("encode tool of step %s: %w", step.Name, err)
	}
	var input json.RawMessage
	if payload.Scope != nil || payload.TimeoutSeconds > 0 || len(payload.Tasks) > 0 || payload.Assert != nil || payload.Cursor != nil {
		if input, err = json.Marshal(payload); err != nil {
			return r.fail(fmt.Sprintf("step %s: its inputs are not JSON-encodable: %v", step.Name, err))
		}
	}
	cmd, err := r.s.issueCommand(r.ctx, r.tx, store.Command{ExecutionID: r.exec.ExecutionID, Step: step.Name, Tool: tj, Input: input,
		LoopID: loopID, LoopIndex: index, Retry: retry, AvailableAt: availableAt, Pool: step.Pool}, r.now)
	if err != nil {
		return err
	}
	r.cmds = append(r.cmds, cmd)
	r.issued++
	if call, ok := serverCall(step, tool, payload, availableAt, r.now); ok {
		return r.runChild(call) // the server runs a child playbook step: see children.go
	}
	return nil
}

// pendingExcept counts non-terminal commands other than exclude.
func (r *run) pendingExcept(exclude int64) int {
	n := 0
	for _, c := range r.cmds {
		if c.EventID != exclude && !c.Status.Terminal() {
			n++
		}
	}
	return n
}

// afterStep runs a finished step's `set` and arcs, or completes the
// execution when nothing is left.
func (r *run) afterStep(step *playbook.Step, result any, exclude int64) error {
	r.scope.Results[step.Name] = result
	r.finishedResult = result
	set, err := engine.StepSet(step, r.scope, result)
	if err != nil {
		return r.renderFailed(err)
	}
	if err := r.setContext(set); err != nil {
		return err
	}
	fired, err := engine.NextSteps(r.pb, step, r.scope)
	if err != nil {
		return r.renderFailed(err)
	}
	for _, f := range fired {
		if err := r.setContext(f.Set); err != nil {
			return err
		}
		if r.graph.IsJoin(f.Step) {
			// Started by settleJoins, once its live branches are over.
			if err := r.arrive(f.Step, step.Name); err != nil {
				return err
			}
			continue
		}
		target := r.pb.ByName[f.Step]
		if err := r.startStep(target, r.scope); err != nil {
			return err
		}
		if r.exec.Status != api.ExecRunning {
			return nil // a render error failed the execution
		}
	}
	// This step's end may be what a waiting join was held back by, even
	// when none of its arcs leads there.
	if err := r.settleJoins(); err != nil {
		return err
	}
	if r.exec.Status != api.ExecRunning {
		return nil
	}
	if r.pendingExcept(exclude) == 0 {
		return r.finishExecution(engine.Plan{Done: true, Result: result})
	}
	return nil
}

func (r *run) setContext(set map[string]any) error {
	if len(set) == 0 {
		return nil
	}
	r.scope.Context = engine.MergeContext(r.scope.Context, set)
	raw, err := json.Marshal(r.scope.Context)
	if err != nil {
		return r.fail(fmt.Sprintf("set: values are not JSON-encodable: %v", err))
	}
	r.exec.Context = raw
	if err := r.tx.ExecutionSetContext(r.ctx, r.exec.ExecutionID, raw); err != nil {
		return err
	}
	setRaw, _ := json.Marshal(set)
	return r.s.event(r.ctx, r.tx, store.Event{ExecutionID: r.exec.ExecutionID, EventType: api.EvContextUpdated, Result: setRaw}, r.now)
}

// commandFinished decides what a finished command means: a retry, a
// failure, or progress (of its loop or of the execution). published is the
// context a task list assigned ("ctx.<path>" -> value), applied before the
// policy's own set, which wins.
func (r *run) commandFinished(cmd store.Command, decision engine.Decision, published map[string]any, result any) error {
	step := r.pb.ByName[cmd.Step]
	if step == nil {
		return r.fail(fmt.Sprintf("step %s is not in playbook %s v%d", cmd.Step, r.exec.Path, r.exec.Version))
	}
	switch decision.Do {
	case "retry":
		scope := r.scope
		if cmd.LoopID != 0 {
			scope = r.iterationScope(step, cmd)
		}
		at := r.now.Add(decision.Delay)
		if err := r.s.event(r.ctx, r.tx, store.Event{ExecutionID: r.exec.ExecutionID, EventType: api.EvRetryScheduled, Step: cmd.Step,
			CommandID: cmd.CommandID, Status: "scheduled", Attempt: cmd.Retry + 2,
			Result: json.RawMessage(fmt.Sprintf(`{"delay_ms":%d,"available_at":%q}`, decision.Delay.Milliseconds(), at.Format(time.RFC3339Nano)))}, r.now); err != nil {
			return err
		}
		return r.issue(step, scope, cmd.LoopID, cmd.LoopIndex, cmd.Retry+1, at)
	case "fail":
		msg := decision.Reason
		if msg == "" {
			msg = cmd.Error
		}
		if cmd.LoopID != 0 {
			l := r.loops[cmd.LoopID]
			if err := r.tx.LoopFinish(r.ctx, l.LoopID, api.LoopFailed, nil, r.now); err != nil && !errors.Is(err, store.ErrConflict) {
				return err
			}
			if err := r.s.event(r.ctx, r.tx, store.Event{ExecutionID: r.exec.ExecutionID, EventType: api.EvLoopFailed, Step: cmd.Step,
				Status: string(api.LoopFailed), Error: msg}, r.now); err != nil {
				return err
			}
			return r.fail(fmt.Sprintf("step %s failed at iteration %d: %s", cmd.Step, cmd.LoopIndex, msg))
		}
		return r.fail(fmt.Sprintf("step %s failed: %s", cmd.Step, msg))
	}
	if err := r.setContext(published); err != nil {
		return err
	}
	if err := r.setContext(decision.Set); err != nil {
		return err
	}
	if cmd.LoopID == 0 {
		return r.afterStep(step, result, cmd.EventID)
	}
	return r.loopProgress(step, cmd)
}

func (r *run) loopItems(l store.Loop) []any {
	if items, ok := r.items[l.LoopID]; ok {
		return items
	}
	var items []any
	_ = json.Unmarshal(l.Items, &items)
	r.items[l.LoopID] = items
	return items
}

func (r *run) iterationScope(step *playbook.Step, cmd store.Command) engine.Scope {
	return engine.IterationScope(r.scope, step, r.loopItems(r.loops[cmd.LoopID]), cmd.LoopIndex)
}

// loopProgress derives a loop's state from its iteration commands: which
// indexes completed, which are in flight, which were never issued. It
// issues more iterations up to max_in_flight, or finishes the loop once
// every index completed. LoopFinish only succeeds once, so loop.done fires
// exactly once even if two servers race here.
func (r *run) loopProgress(step *playbook.Step, finished store.Command) error {
	l, ok := r.loops[finished.LoopID]
	if !ok || l.Status != api.LoopRunning {
		return nil
	}
	// The latest command of each index decides its state: an index whose
	// completed command was followed by a retry is not done yet. Slices,
	// not maps: this runs once per iteration over every iteration.
	latest := make([]int, l.Total) // index -> position in r.cmds + 1
	for k, c := range r.cmds {     // event_id order
		if c.LoopID == l.LoopID && c.LoopIndex >= 0 && c.LoopIndex < l.Total {
			latest[c.LoopIndex] = k + 1
		}
	}
	done, inFlight := 0, 0
	for _, k := range latest {
		if k == 0 {
			continue
		}
		switch c := r.cmds[k-1]; {
		case c.Status == api.CmdCompleted:
			done++
		case !c.Status.Terminal():
			inFlight++
		}
	}
	if done == l.Total {
		results := make([]any, l.Total)
		for i, k := range latest {
			v, err := r.s.decodeResult(r.ctx, r.tx, r.cmds[k-1].Result)
			if err != nil {
				return err
			}
			results[i] = v
		}
		return r.finishLoop(step, l, results)
	}
	items := r.loopItems(l)
	for i := 0; i < l.Total && inFlight < l.MaxInFlight; i++ {
		if latest[i] != 0 {
			continue
		}
		if err := r.issue(step, engine.IterationScope(r.scope, step, items, i), l.LoopID, i, 0, r.now); err != nil {
			return err
		}
		inFlight++
	}
	return nil
}

func (r *run) finishLoop(step *playbook.Step, l store.Loop, results []any) error {
	raw, err := json.Marshal(results)
	if err != nil {
		return r.fail(fmt.Sprintf("step %s: loop results are not JSON-encodable: %v", step.Name, err))
	}
	stored, err := r.s.storeResult(r.ctx, r.tx, raw)
	if err != nil {
		return err
	}
	if err := r.tx.LoopFinish(r.ctx, l.LoopID, api.LoopDone, stored, r.now); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil // already finished: loop.done fired once, elsewhere
		}
		return err
	}
	l.Status = api.LoopDone
	r.loops[l.LoopID] = l
	if err := r.s.event(r.ctx, r.tx, store.Event{ExecutionID: r.exec.ExecutionID, EventType: api.EvLoopDone, Step: step.Name,
		Status: string(api.LoopDone), Result: stored}, r.now); err != nil {
		return err
	}
	return r.afterStep(step, results, 0)
}
