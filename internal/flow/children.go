package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/errkind"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/store"
)

// ErrChildDepth: a child playbook would nest deeper than
// MILLRACE_MAX_CHILD_DEPTH allows (the API answers 422 budget_exceeded).
var ErrChildDepth = errors.New("child playbook depth exceeded")

// DefaultMaxChildDepth is Config.MaxChildDepth's value when it is 0.
const DefaultMaxChildDepth = 16

// heldBy is the worker id of a command the server runs itself: a
// `playbook` step waiting for its child (see runChild).
const heldBy = "millrace-server"

// heldFor is how long the server holds such a command: for good. The
// child's end (or a cancel) releases it, in the transaction that ends the
// child, so nothing has to expire.
const heldFor = 100 * 365 * 24 * time.Hour

// ChildStart says what to start and where it nests.
type ChildStart struct {
	Path    string
	Version int            // 0: the latest
	Payload map[string]any // overrides the workload
	// Parent is the parent execution (0: a top-level execution).
	Parent int64
	// ParentCommand is the event id of the parent's command that starts
	// the child (0: not keyed). With ParentTask (a task's key within the
	// command's task list; 0 for a single tool) it names the child: a
	// re-run of the command gets the child it started, never a second one.
	ParentCommand int64
	ParentTask    int
	ParentAttempt int
}

func (s *Service) maxChildDepth() int {
	if s.cfg.MaxChildDepth > 0 {
		return s.cfg.MaxChildDepth
	}
	return DefaultMaxChildDepth
}

// Start starts an execution as c says: a top-level one, or a child of
// c.Parent. A keyed child that exists already is returned as it is.
func (s *Service) Start(ctx context.Context, c ChildStart) (store.Execution, error) {
	var entry store.CatalogEntry
	var pb *playbook.Playbook
	err := s.st.Read(ctx, func(q store.Querier) error {
		var err error
		entry, pb, err = s.resolve(ctx, q, c.Path, c.Version)
		return err
	})
	if err != nil {
		return store.Execution{}, err
	}
	id := s.ids.Next()
	var exec store.Execution
	issued := false
	idem := store.IdempotencyFrom(ctx) // the caller's: Do's function gets the batch's context
	err = s.st.Do(ctx, id, func(ctx context.Context, tx store.Tx) error {
		var n int
		var err error
		now := s.now()
		exec, n, err = s.startIn(ctx, tx, c, id, entry, pb, now)
		issued = n > 0
		if err != nil {
			return err
		}
		// Last, so the answer has the status the submit ends with; a key
		// already taken undoes all of the above (store.ErrIdempotencyTaken).
		return idem.Record(ctx, tx, strconv.FormatInt(exec.ExecutionID, 10),
			api.Started{ExecutionID: exec.ExecutionID, Status: exec.Status}, now)
	})
	if err != nil && c.ParentCommand != 0 && !errkind.Is(err) {
		// Two starts of one keyed child raced and the unique key refused
		// ours: the winner's child is the one.
		if e, rerr := store.ReadValue(ctx, s.st, func(q store.Querier) (store.Execution, error) {
			return q.ExecutionChildOf(ctx, c.ParentCommand, c.ParentTask)
		}); rerr == nil {
			return e, nil
		}
	}
	if err != nil {
		return store.Execution{}, err
	}
	if issued {
		s.wake()
	}
	if exec.ExecutionID == id {
		mExecStarted.Inc()
	}
	return exec, nil
}

// resolve finds the catalog entry and parsed playbook a start runs,
// reading through q on a cache miss. Inside a transaction q must be that
// transaction: a read from the pool there would wait for a second
// connection while holding one, and with every committer doing so the
// pool deadlocks until the batch times out (the fault matrix's 30 s
// submits).
func (s *Service) resolve(ctx context.Context, q store.Querier, path string, version int) (store.CatalogEntry, *playbook.Playbook, error) {
	entry, err := s.catalogEntry(ctx, q, path, version)
	if errors.Is(err, store.ErrNotFound) {
		if version > 0 {
			return entry, nil, errorf(ErrPlaybookNotFound, "playbook %q version %d is not registered; list versions with GET /api/catalog", path, version)
		}
		return entry, nil, errorf(ErrPlaybookNotFound, "playbook %q is not registered; register it with POST /api/catalog/register or `millrace register FILE`", path)
	}
	if err != nil {
		return entry, nil, err
	}
	pb, err := s.playbookFor(ctx, q, entry.CatalogID)
	return entry, pb, err
}

// startIn starts execution id inside tx and returns it with the number of
// commands it issued. A keyed child that exists is returned instead
// (nothing issued).
func (s *Service) startIn(ctx context.Context, tx store.Tx, c ChildStart, id int64, entry store.CatalogEntry, pb *playbook.Playbook, now time.Time) (store.Execution, int, error) {
	if c.ParentCommand != 0 {
		e, err := tx.ExecutionChildOf(ctx, c.ParentCommand, c.ParentTask)
		if err == nil {
			return e, 0, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Execution{}, 0, err
		}
	}
	depth := 0
	if c.Parent != 0 {
		depth = 1
		p, err := tx.ExecutionGet(ctx, c.Parent)
		switch {
		case err == nil:
			depth = p.Depth + 1
		case !errors.Is(err, store.ErrNotFound):
			return store.Execution{}, 0, err
		}
		if max := s.maxChildDepth(); depth > max {
			return store.Execution{}, 0, errorf(ErrChildDepth,
				"child playbook %s: depth %d exceeds MILLRACE_MAX_CHILD_DEPTH (%d); a playbook that calls itself must stop before that (raise the setting only for nesting that is meant)",
				c.Path, depth, max)
		}
	}
	workload := map[string]any{}
	for k, v := range pb.Workload {
		workload[k] = v
	}
	for k, v := range c.Payload {
		workload[k] = v
	}
	wl, err := json.Marshal(workload)
	if err != nil {
		return store.Execution{}, 0, errorf(ErrInvalid, "workload is not JSON-encodable: %v", err)
	}
	if err := s.checkWorkload(wl); err != nil {
		return store.Execution{}, 0, err
	}
	exec := store.Execution{
		ExecutionID: id,
		CatalogID:   entry.CatalogID,
		Path:        entry.Path,
		Version:     entry.Version,
		Status:      api.ExecRunning,
		Workload:    wl,
		StartedAt:   now,

		ParentExecutionID: c.Parent,
		Depth:             depth,
		ParentCommandID:   c.ParentCommand,
		ParentTask:        c.ParentTask,
		ParentAttempt:     c.ParentAttempt,
	}
	if err := tx.ExecutionInsert(ctx, exec); err != nil {
		return store.Execution{}, 0, err
	}
	if err := s.event(ctx, tx, store.Event{ExecutionID: exec.ExecutionID, EventType: api.EvPlaybookStarted, Status: string(api.ExecRunning)}, now); err != nil {
		return store.Execution{}, 0, err
	}
	r, err := s.newRun(ctx, tx, &exec, pb, now)
	if err != nil {
		return store.Execution{}, 0, err
	}
	if err := r.startStep(pb.StartStep(), r.scope); err != nil {
		return store.Execution{}, 0, err
	}
	if exec.Status == api.ExecRunning {
		// Revision 0 until the first touch. Should this transaction
		// roll back, the execution id never exists: harmless.
		s.states.put(exec.ExecutionID, r.state(0))
	}
	return exec, r.issued, nil
}

// childCall is a `playbook` tool's rendered config, as the server reads it.
type childCall struct {
	path, returnStep string
	version          int
	payload          map[string]any
}

// serverCall reports whether the server runs command tool of step itself
// and what it calls: a single `playbook` tool whose config the server
// rendered, due now, with nothing only a worker does (a step timeout or
// assert, a tool timeout, a keychain). Anything else, and any config the
// server does not read plainly, is left to a worker's playbook tool,
// which says what is wrong.
func serverCall(step *playbook.Step, tool map[string]any, p api.Payload, availableAt, now time.Time) (childCall, bool) {
	if len(step.Tasks) > 0 || p.Cursor != nil || p.Scope != nil || len(p.Keychain) > 0 || p.TimeoutSeconds > 0 ||
		p.Assert != nil || availableAt.After(now) || tool["kind"] != "playbook" {
		return childCall{}, false
	}
	var c childCall
	for k, v := range tool {
		var ok bool
		switch k {
		case "kind", "task", "name":
			ok = true
		case "path":
			c.path, ok = v.(string)
			ok = ok && c.path != ""
		case "return_step":
			c.returnStep, ok = v.(string)
		case "input", "payload":
			if v == nil {
				ok = true
			} else if c.payload == nil {
				c.payload, ok = v.(map[string]any)
			}
		case "version":
			c.version, ok = callVersion(v)
		}
		if !ok {
			return childCall{}, false
		}
	}
	return c, c.path != ""
}

// callVersion reads a whole, positive version (or nothing: the latest).
func callVersion(v any) (int, bool) {
	switch n := v.(type) {
	case nil:
		return 0, true
	case float64:
		if n >= 1 && n <= 1<<31 && n == float64(int(n)) {
			return int(n), true
		}
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil && i >= 1 && i <= 1<<31
	}
	return 0, false
}

// runChild starts the child of a `playbook` command just issued (the last
// of r.cmds) in this transaction and holds the command until the child
// ends: no notification, no worker, no slot. When the child cannot start
// (not registered, too deep, a bad config) or ends at once, the command
// is left as issued: a worker's playbook tool then starts (or finds) the
// same keyed child and reports what happened, so the step fails or
// continues under its policy exactly as a tool's error would.
func (r *run) runChild(call childCall) error {
	k := len(r.cmds) - 1
	cmd := r.cmds[k]
	entry, pb, err := r.s.resolve(r.ctx, r.tx, call.path, call.version)
	if err != nil {
		if errkind.Is(err) {
			return nil
		}
		return err
	}
	c := ChildStart{Path: call.path, Version: call.version, Payload: call.payload, Parent: r.exec.ExecutionID,
		ParentCommand: cmd.EventID, ParentAttempt: cmd.Attempt + 1}
	child, _, err := r.s.startIn(r.ctx, r.tx, c, r.s.ids.Next(), entry, pb, r.now)
	if err != nil {
		if errkind.Is(err) {
			return nil
		}
		return err
	}
	if child.Status != api.ExecRunning {
		return nil
	}
	held, err := r.tx.CommandHold(r.ctx, cmd.EventID, heldBy, r.now.Add(heldFor), r.now)
	if err != nil {
		return err
	}
	r.cmds[k] = held
	return r.s.claimEvents(r.ctx, r.tx, held, heldBy, true, r.now)
}

// childEnded reports a child's end to the parent's command the server
// holds for it (see runChild), inside the transaction that ended the
// child: the command completes with the child's result (or its
// return_step's) or fails with its error, and the parent advances. It
// returns the commands that issued. A command a worker runs, or one that
// ended meanwhile, is left alone.
func (s *Service) childEnded(ctx context.Context, tx store.Tx, exec *store.Execution, now time.Time) (int, error) {
	if exec.ParentCommandID == 0 {
		return 0, nil
	}
	cmd, err := tx.CommandGet(ctx, exec.ParentCommandID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if cmd.Status != api.CmdRunning || cmd.WorkerID != heldBy || cmd.Attempt != exec.ParentAttempt || exec.ParentTask != 0 {
		return 0, nil
	}
	rep := Report{EventID: cmd.EventID, ExecutionID: cmd.ExecutionID, WorkerID: heldBy, Attempt: cmd.Attempt,
		EventType: api.EvCommandCompleted}
	if exec.Status == api.ExecCompleted {
		rep.Result, err = s.childResult(ctx, tx, exec, cmd)
		if err != nil {
			rep.Result = nil
			rep.EventType, rep.Error = api.EvCommandFailed, err.Error()
		}
	} else {
		rep.EventType = api.EvCommandFailed
		rep.Error = fmt.Sprintf("child execution %d of %s %s: %s", exec.ExecutionID, exec.Path, exec.Status, exec.Error)
	}
	_, n, err := s.finish(ctx, tx, rep, now)
	if errkind.Is(err) {
		return 0, nil // the parent ended or the command was cancelled meanwhile
	}
	return n, err
}

// childResult is what a completed child gives its parent's step: its
// result, or with return_step that step's last completed result (the
// worker's rule, see worker/commands RunPlaybook).
func (s *Service) childResult(ctx context.Context, tx store.Tx, exec *store.Execution, cmd store.Command) (json.RawMessage, error) {
	var tool struct {
		ReturnStep string `json:"return_step"`
	}
	_ = json.Unmarshal(cmd.Tool, &tool)
	raw := exec.Result
	if tool.ReturnStep != "" {
		evs, err := tx.EventList(ctx, exec.ExecutionID)
		if err != nil {
			return nil, err
		}
		raw = nil
		found := false
		for _, ev := range evs {
			if ev.Step == tool.ReturnStep && (ev.EventType == api.EvCommandCompleted || ev.EventType == api.EvLoopDone) {
				raw, found = ev.Result, true
			}
		}
		if !found {
			return nil, fmt.Errorf("child execution %d never completed return_step %q", exec.ExecutionID, tool.ReturnStep)
		}
	}
	if len(raw) == 0 {
		return nil, nil
	}
	return LoadResult(ctx, tx, raw)
}

// cancelChildren cancels, inside tx, the running children of an execution
// that failed or was cancelled: a server-held child has no worker whose
// lost lease would cancel it. Their own children follow.
func (s *Service) cancelChildren(ctx context.Context, tx store.Tx, execID int64, why string, now time.Time) error {
	kids, err := tx.ExecutionChildren(ctx, execID)
	if err != nil {
		return err
	}
	for _, k := range kids {
		if k.Status != api.ExecRunning {
			continue
		}
		kid, err := tx.LockExecution(ctx, k.ExecutionID)
		if err != nil || kid.Status != api.ExecRunning {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return err
		}
		msg := fmt.Sprintf("cancelled: parent execution %d %s", execID, why)
		if _, err := tx.CommandCancelExecution(ctx, kid.ExecutionID, now); err != nil {
			return err
		}
		if err := tx.ExecutionFinish(ctx, kid.ExecutionID, api.ExecCancelled, nil, msg, now); err != nil {
			return err
		}
		if err := tx.ExecutionTouch(ctx, kid.ExecutionID, s.ids.Next()); err != nil {
			return err
		}
		if err := s.event(ctx, tx, store.Event{ExecutionID: kid.ExecutionID, EventType: api.EvExecCancelled, Status: string(api.ExecCancelled), Error: msg}, now); err != nil {
			return err
		}
		s.states.drop(kid.ExecutionID)
		if err := s.cancelChildren(ctx, tx, kid.ExecutionID, "was cancelled", now); err != nil {
			return err
		}
	}
	return nil
}
