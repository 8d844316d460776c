package flow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver/sqlitetest"
	"github.com/millrace/millrace/internal/tools"
)

const (
	childBook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: kid, path: c/kid}
workflow:
  - step: start
    tool: {kind: noop}
`
	parentBook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: parent, path: c/parent}
workflow:
  - step: start
    tool: {kind: playbook, path: c/kid, input: {n: 1}}
`
	selfBook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: self, path: c/self}
workflow:
  - step: start
    tool: {kind: playbook, path: c/self}
`
)

// rig is a flow service over a fresh SQLite store and a test "worker"
// that runs what is notified, as the commands worker would.
type rig struct {
	t  *testing.T
	st *store.Store
	f  *flow.Service
	// waitingParents counts playbook commands a worker ran (and so held a
	// slot for) instead of the server.
	mu             sync.Mutex
	waitingParents int
}

func newRig(t *testing.T, depth int) *rig {
	t.Helper()
	st := sqlitetest.Store(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := flow.New(st, ids.New(-1), flow.Config{LeaseTTL: time.Minute, MaxChildDepth: depth}, tools.Kinds(), log, nil)
	g := &rig{t: t, st: st, f: f}
	for _, b := range []string{childBook, parentBook, selfBook} {
		if _, err := f.Register(t.Context(), b); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

func (g *rig) exec(id int64) store.Execution {
	g.t.Helper()
	e, err := store.ReadValue(g.t.Context(), g.st, func(q store.Querier) (store.Execution, error) { return q.ExecutionGet(g.t.Context(), id) })
	if err != nil {
		g.t.Fatal(err)
	}
	return e
}

func (g *rig) commands(execID int64) []store.Command {
	g.t.Helper()
	cs, err := store.ReadValue(g.t.Context(), g.st, func(q store.Querier) ([]store.Command, error) {
		return q.CommandListByExecution(g.t.Context(), execID)
	})
	if err != nil {
		g.t.Fatal(err)
	}
	return cs
}

// work runs notified commands on slots concurrent "slots" until done
// reports true, or fails the test after the deadline.
func (g *rig) work(slots int, deadline time.Duration, done func() bool) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(g.t.Context(), deadline)
	defer cancel()
	sem := make(chan struct{}, slots)
	var wg sync.WaitGroup
	defer wg.Wait()
	taken := map[int64]bool{}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			g.t.Fatalf("work did not finish within %s", deadline)
		case <-tick.C:
		}
		ns, err := store.ReadValue(ctx, g.st, func(q store.Querier) ([]store.Notice, error) {
			return q.CommandsToNotify(ctx, time.Now().Add(time.Hour), 1000)
		})
		if err != nil {
			g.t.Fatal(err)
		}
		for _, n := range ns {
			if n.Status != api.CmdIssued || taken[n.EventID] {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				g.t.Fatalf("work did not finish within %s", deadline)
			}
			taken[n.EventID] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				g.run(ctx, n)
			}()
		}
	}
}

// run claims and runs one command: noop, or a playbook tool as the
// worker's does (a keyed start, then waiting for the child: a held slot).
func (g *rig) run(ctx context.Context, n store.Notice) {
	c, err := g.f.ClaimAndStart(ctx, n.EventID, "w", n.ExecutionID, 0)
	if err != nil {
		return
	}
	rep := flow.Report{EventType: api.EvCommandCompleted, EventID: c.EventID, ExecutionID: c.ExecutionID, WorkerID: "w", Attempt: c.Attempt,
		Result: json.RawMessage(`{"ok":true}`)}
	var tool map[string]any
	_ = json.Unmarshal(c.Tool, &tool)
	if tool["kind"] == "playbook" {
		g.mu.Lock()
		g.waitingParents++
		g.mu.Unlock()
		path, _ := tool["path"].(string)
		kid, err := g.f.Start(ctx, flow.ChildStart{Path: path, Parent: c.ExecutionID, ParentCommand: c.EventID, ParentAttempt: c.Attempt})
		if err != nil {
			rep.EventType, rep.Result, rep.Error = api.EvCommandFailed, nil, "start child "+path+": "+err.Error()
		} else {
			for g.exec(kid.ExecutionID).Status == api.ExecRunning && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			if e := g.exec(kid.ExecutionID); e.Status != api.ExecCompleted {
				rep.EventType, rep.Result, rep.Error = api.EvCommandFailed, nil, fmt.Sprintf("child %s: %s", e.Status, e.Error)
			}
		}
	}
	if _, err := g.f.Apply(ctx, rep); err != nil && ctx.Err() == nil {
		g.t.Errorf("report command %d: %v", c.EventID, err)
	}
}

// A `playbook` step is the server's: its command is held (running, no
// notification, no worker) while the child runs, and completes with the
// child's result in the transaction that ends the child.
func TestPlaybookStepHeldByServer(t *testing.T) {
	t.Parallel()
	g := newRig(t, 0)
	ex, err := g.f.Execute(t.Context(), "c/parent", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmds := g.commands(ex.ExecutionID)
	if len(cmds) != 1 || cmds[0].Status != api.CmdRunning || cmds[0].WorkerID != "millrace-server" || cmds[0].Attempt != 1 {
		t.Fatalf("parent commands = %+v, want one running, held by millrace-server, attempt 1", cmds)
	}
	kids, err := store.ReadValue(t.Context(), g.st, func(q store.Querier) ([]store.Execution, error) {
		return q.ExecutionChildren(t.Context(), ex.ExecutionID)
	})
	if err != nil || len(kids) != 1 {
		t.Fatalf("children = %d, %v; want 1", len(kids), err)
	}
	kid := kids[0]
	if kid.Depth != 1 || kid.ParentCommandID != cmds[0].EventID || kid.ParentAttempt != 1 || string(kid.Workload) != `{"n":1}` {
		t.Fatalf("child = depth %d command %d attempt %d workload %s; want 1, %d, 1, {\"n\":1}", kid.Depth, kid.ParentCommandID, kid.ParentAttempt, kid.Workload, cmds[0].EventID)
	}
	g.work(1, 2*time.Minute, func() bool { return g.exec(ex.ExecutionID).Status != api.ExecRunning })
	done := g.exec(ex.ExecutionID)
	if done.Status != api.ExecCompleted || string(done.Result) != `{"ok":true}` {
		t.Fatalf("parent = %s %s %q, want completed with the child's result", done.Status, done.Result, done.Error)
	}
	if g.waitingParents != 0 {
		t.Fatalf("a worker ran %d playbook commands, want none", g.waitingParents)
	}
}

// A server that did not register the playbooks (another replica, or one
// just restarted) has neither in its caches: the child's catalog entry and
// playbook are read inside the parent's transaction, through it. A read
// from the pool there held one connection while waiting for another and
// deadlocked small pools for the batch's 30 s (store.ErrReadInTx now).
func TestHeldChildOnAnotherServer(t *testing.T) {
	t.Parallel()
	g := newRig(t, 0)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	other := flow.New(g.st, ids.New(-2), flow.Config{LeaseTTL: time.Minute}, tools.Kinds(), log, nil)
	ex, err := other.Execute(t.Context(), "c/parent", 0, nil)
	if err != nil {
		t.Fatalf("Execute on a server with cold caches: %v", err)
	}
	cmds := g.commands(ex.ExecutionID)
	if len(cmds) != 1 || cmds[0].Status != api.CmdRunning || cmds[0].WorkerID != "millrace-server" {
		t.Fatalf("parent commands = %+v, want one held by millrace-server", cmds)
	}
	g.work(1, 2*time.Minute, func() bool { return g.exec(ex.ExecutionID).Status != api.ExecRunning })
	if done := g.exec(ex.ExecutionID); done.Status != api.ExecCompleted {
		t.Fatalf("parent = %s %q, want completed", done.Status, done.Error)
	}
}

// 200 parents, each calling a child, complete on a pool of 2 slots: a
// parent waiting for its child holds no slot.
func TestWaitingParentsDoNotStarveThePool(t *testing.T) {
	t.Parallel()
	g := newRig(t, 0)
	var parents []int64
	for range 200 {
		ex, err := g.f.Execute(t.Context(), "c/parent", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		parents = append(parents, ex.ExecutionID)
	}
	left := func() bool {
		for len(parents) > 0 && g.exec(parents[0]).Status != api.ExecRunning {
			parents = parents[1:]
		}
		return len(parents) == 0
	}
	g.work(2, 5*time.Minute, left)
	if g.waitingParents != 0 {
		t.Fatalf("a worker ran %d playbook commands, want none", g.waitingParents)
	}
}

// A playbook that calls itself stops at MILLRACE_MAX_CHILD_DEPTH: the start
// that would go deeper fails the step with the setting's name, and every
// ancestor fails with it.
func TestSelfCallingPlaybookStopsAtTheDepthLimit(t *testing.T) {
	t.Parallel()
	g := newRig(t, 4)
	ex, err := g.f.Execute(t.Context(), "c/self", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.work(1, 2*time.Minute, func() bool { return g.exec(ex.ExecutionID).Status != api.ExecRunning })
	root := g.exec(ex.ExecutionID)
	if root.Status != api.ExecFailed || !strings.Contains(root.Error, "depth 5 exceeds MILLRACE_MAX_CHILD_DEPTH (4)") {
		t.Fatalf("root = %s %q, want failed naming MILLRACE_MAX_CHILD_DEPTH (4)", root.Status, root.Error)
	}
	n := 0
	for id := ex.ExecutionID; ; n++ {
		kids, err := store.ReadValue(t.Context(), g.st, func(q store.Querier) ([]store.Execution, error) {
			return q.ExecutionChildren(t.Context(), id)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(kids) == 0 {
			break
		}
		if len(kids) != 1 || kids[0].Status != api.ExecFailed || kids[0].Depth != n+1 {
			t.Fatalf("children of %d = %+v, want one failed at depth %d", id, kids, n+1)
		}
		id = kids[0].ExecutionID
	}
	if n != 4 {
		t.Fatalf("the chain has %d children, want 4 (the limit)", n)
	}
	// Through the start a worker makes, the refusal is ErrChildDepth.
	_, err = g.f.Start(t.Context(), flow.ChildStart{Path: "c/self", Parent: deepest(t, g, ex.ExecutionID)})
	if !errors.Is(err, flow.ErrChildDepth) || !strings.Contains(err.Error(), "MILLRACE_MAX_CHILD_DEPTH (4)") {
		t.Fatalf("start below the deepest = %v, want ErrChildDepth naming the setting", err)
	}
}

func deepest(t *testing.T, g *rig, id int64) int64 {
	for {
		kids, err := store.ReadValue(t.Context(), g.st, func(q store.Querier) ([]store.Execution, error) {
			return q.ExecutionChildren(t.Context(), id)
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(kids) == 0 {
			return id
		}
		id = kids[0].ExecutionID
	}
}

// A keyed child starts once: a re-run of the command (another attempt, or
// several at once) gets the child the first start made.
func TestKeyedChildStartsOnce(t *testing.T) {
	t.Parallel()
	g := newRig(t, 0)
	ex, err := g.f.Execute(t.Context(), "c/parent", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := g.commands(ex.ExecutionID)[0]
	var wg sync.WaitGroup
	got := make([]int64, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := g.f.Start(t.Context(), flow.ChildStart{Path: "c/kid", Parent: ex.ExecutionID, ParentCommand: cmd.EventID, ParentTask: 3, ParentAttempt: i + 1})
			got[i], errs[i] = k.ExecutionID, err
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i] != got[0] {
			t.Fatalf("start %d = %d, %v; want the one child %d", i, got[i], errs[i], got[0])
		}
	}
	// The child the server started for the step (task 0) is found too.
	k, err := g.f.Start(t.Context(), flow.ChildStart{Path: "c/kid", Parent: ex.ExecutionID, ParentCommand: cmd.EventID, ParentAttempt: 2})
	if err != nil {
		t.Fatal(err)
	}
	if k.ParentAttempt != 1 || k.ParentTask != 0 {
		t.Fatalf("a re-run's start = attempt %d task %d, want the server's child (attempt 1, task 0)", k.ParentAttempt, k.ParentTask)
	}
}

// Cancelling a child fails the parent's held step; a parent that fails
// cancels its running children.
func TestChildCancelBothWays(t *testing.T) {
	t.Parallel()
	g := newRig(t, 0)
	ex, err := g.f.Execute(t.Context(), "c/parent", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	kid := deepest(t, g, ex.ExecutionID)
	if _, err := g.f.Cancel(t.Context(), kid); err != nil {
		t.Fatal(err)
	}
	if p := g.exec(ex.ExecutionID); p.Status != api.ExecFailed || !strings.Contains(p.Error, "cancelled") {
		t.Fatalf("parent after its child's cancel = %s %q, want failed saying the child was cancelled", p.Status, p.Error)
	}
	// The other way: a parent cancelled (even without --cascade) leaves
	// no running child.
	ex2, err := g.f.Execute(t.Context(), "c/parent", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.f.Cancel(t.Context(), ex2.ExecutionID); err != nil {
		t.Fatal(err)
	}
	if k := g.exec(deepest(t, g, ex2.ExecutionID)); k.Status != api.ExecCancelled {
		t.Fatalf("child after the parent's cancel = %s, want cancelled", k.Status)
	}
}
