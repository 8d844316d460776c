// Package local runs playbooks in-process, with no server and no NATS:
// `millrace run --runtime local`. It is the same flow engine and event store
// (SQLite in a temporary directory) as a deployment; an in-process
// dispatcher takes the place of the relay, NATS and the workers, so a
// playbook behaves the same in both runtimes.
package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/lifecycle"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/tools"
	"github.com/millrace/millrace/internal/wire"
	"github.com/millrace/millrace/internal/worker/commands"
)

// Defaults for Options.
const (
	DefaultConcurrency = 16
	pollInterval       = 20 * time.Millisecond
	workerID           = "local"
)

// Options configures a local run.
type Options struct {
	// Dir holds playbooks the run may call as children (every *.yaml that
	// validates is registered); empty means the directory of the file.
	Dir string
	// Credentials are the secrets tools may use, by name.
	Credentials map[string]map[string]any
	Concurrency int
	Log         *slog.Logger
	// Progress receives the main execution's events as they happen.
	Progress func(api.Event)
	// Skipped hears of each playbook in Dir that is not registered because
	// it does not validate (so a playbook tool cannot call it), with its
	// problems; nil logs them as warnings.
	Skipped func(file string, problems error)
}

// Run registers file, executes it with payload and waits until it ends.
// It returns the final execution record; an execution that failed is not
// an error here (its status says so).
func Run(ctx context.Context, file string, payload map[string]any, o Options) (api.Execution, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	content, err := os.ReadFile(file)
	if err != nil {
		return api.Execution{}, err
	}
	tmp, err := os.MkdirTemp("", "millrace-local-")
	if err != nil {
		return api.Execution{}, err
	}
	defer os.RemoveAll(tmp)
	drv, err := sqlitedriver.Open(ctx, filepath.Join(tmp, "local.db"))
	if err != nil {
		return api.Execution{}, err
	}
	if err := drv.Migrate(ctx); err != nil {
		drv.Close()
		return api.Execution{}, err
	}
	st := store.New(drv, store.Options{})
	defer st.Close()

	d := &dispatcher{st: st, opts: o, wake: make(chan struct{}, 1), sem: make(chan struct{}, o.Concurrency)}
	d.flow = flow.New(st, ids.New(-1), flow.Config{LeaseTTL: time.Hour},
		tools.Kinds(), o.Log, d.nudge)

	dir := o.Dir
	if dir == "" {
		dir = filepath.Dir(file)
	}
	d.registerDir(ctx, dir, file)
	entry, err := d.flow.RegisterFile(ctx, file, string(content))
	if err != nil {
		return api.Execution{}, err
	}
	exec, err := d.flow.Execute(ctx, entry.Path, entry.Version, payload)
	if err != nil {
		return api.Execution{}, err
	}
	// One group owns the dispatcher and every command it starts: Run
	// returns, and the store closes, only after all of them have ended.
	d.group = lifecycle.New(ctx)
	d.group.Go("dispatcher", func(ctx context.Context) error { d.loop(ctx); return nil })
	defer func() { _ = d.group.Stop() }()
	ex, err := d.wait(ctx, exec.ExecutionID, o.Progress)
	return wire.Execution(ex), err
}

type dispatcher struct {
	st   *store.Store
	flow *flow.Service
	opts Options
	wake chan struct{}
	sem  chan struct{}
	// group runs the dispatcher loop and the commands.
	group *lifecycle.Group
}

func (d *dispatcher) nudge() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// registerDir registers the other playbooks next to the main one so that
// `playbook` tools can find them. Playbooks that do not validate are
// skipped and reported to Options.Skipped, since a child call to one would
// otherwise fail later with only "not registered"; YAML files that are not
// playbooks (data, manifests) are passed over without a word. The main
// file's own errors are reported by Run.
func (d *dispatcher) registerDir(ctx context.Context, dir, main string) {
	absMain, _ := filepath.Abs(main)
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		if abs, _ := filepath.Abs(p); abs == absMain {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil || !isPlaybook(b) {
			return nil
		}
		if _, err := d.flow.RegisterFile(ctx, p, string(b)); err != nil {
			if d.opts.Skipped != nil && errors.Is(err, flow.ErrInvalidPlaybook) {
				d.opts.Skipped(p, err)
			} else {
				d.opts.Log.Warn("not registering neighbour playbook", "file", p, "err", err)
			}
		}
		return nil
	})
}

// loop hands every due command notification to a goroutine, as NATS
// would hand it to a worker.
func (d *dispatcher) loop(ctx context.Context) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-t.C:
		}
		due, err := store.ReadValue(ctx, d.st, func(q store.Querier) ([]store.Notice, error) {
			return q.CommandsToNotify(ctx, time.Now().UTC(), 256)
		})
		if err != nil || len(due) == 0 {
			continue
		}
		marks := make([]store.Notified, len(due))
		for i, n := range due {
			marks[i] = store.Notified{EventID: n.EventID, Publishes: n.Publishes}
		}
		if err := d.st.Do(ctx, marks[0].EventID, func(ctx context.Context, tx store.Tx) error {
			_, err := tx.CommandNotified(ctx, marks)
			return err
		}); err != nil {
			continue
		}
		for _, n := range due {
			if n.Status.Terminal() {
				continue
			}
			select {
			case d.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			if !d.group.Go("command", func(ctx context.Context) error {
				defer func() { <-d.sem }()
				d.run(ctx, n.EventID)
				return nil
			}) {
				<-d.sem // stopping: the run is over
				return
			}
		}
	}
}

// run claims and executes one command, like a worker.
func (d *dispatcher) run(ctx context.Context, eventID int64) {
	cl, err := d.flow.ClaimAndStart(ctx, eventID, workerID, 0, 0) // no token: nothing else reports on a local run
	if err != nil {
		return // ended or cancelled meanwhile
	}
	env := &localEnv{d: d, parent: cl.ExecutionID}
	var tool struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(cl.Command.Tool, &tool) == nil && tool.Kind == "playbook" {
		// A playbook step's one child is keyed as the flow keys it: the
		// flow may have started it already (see flow.runChild).
		env.command, env.attempt = cl.EventID, cl.Attempt
	}
	res, set, runErr := commands.Execute(ctx, wire.Command(cl.Command), env)
	if ctx.Err() != nil {
		return
	}
	rep := flow.Report{EventType: api.EvCommandCompleted, EventID: eventID, WorkerID: workerID, Attempt: cl.Attempt, Context: set}
	if runErr != nil {
		rep.EventType = api.EvCommandFailed
		rep.Error = runErr.Error()
		var te *tools.Error
		if errors.As(runErr, &te) {
			rep.Error, rep.Retryable = te.Kind+": "+te.Message, te.Retryable
			if te.Result != nil {
				res = te.Result
			}
		}
	}
	if res != nil {
		if b, err := json.Marshal(res); err == nil {
			rep.Result = b
		} else {
			rep.EventType, rep.Error = api.EvCommandFailed, "tool result is not JSON-encodable: "+err.Error()
		}
	}
	if _, err := d.flow.Apply(ctx, rep); err != nil {
		d.opts.Log.Warn("recording a result failed", "event_id", eventID, "err", err)
	}
}

// wait polls the execution until it ends, feeding progress.
func (d *dispatcher) wait(ctx context.Context, id int64, progress func(api.Event)) (store.Execution, error) {
	seen := 0
	for {
		var ex store.Execution
		var evs []store.Event
		err := d.st.Read(ctx, func(q store.Querier) error {
			var err error
			if ex, err = q.ExecutionGet(ctx, id); err != nil {
				return err
			}
			if progress != nil {
				evs, err = q.EventList(ctx, id)
			}
			if err == nil {
				ex.Result, err = flow.LoadResult(ctx, q, ex.Result)
			}
			return err
		})
		if err != nil {
			return ex, err
		}
		for _, e := range evs[min(seen, len(evs)):] {
			progress(wire.Event(e))
		}
		seen = len(evs)
		if ex.Status != api.ExecRunning {
			return ex, nil
		}
		select {
		case <-ctx.Done():
			_, _, _ = d.flow.CancelCascade(context.Background(), id)
			return ex, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// localEnv serves credentials from Options and runs children in-process.
type localEnv struct {
	d      *dispatcher
	parent int64
	// command and attempt key the child of a playbook step (0: unkeyed).
	command int64
	attempt int
}

func (e *localEnv) Credential(_ context.Context, name string) (map[string]any, error) {
	c, ok := e.d.opts.Credentials[name]
	if !ok {
		return nil, &tools.Error{Kind: "credential", Message: fmt.Sprintf("credential %q is not defined for the local runtime; pass it with --credentials FILE", name)}
	}
	return c, nil
}

func (e *localEnv) RunPlaybook(ctx context.Context, req tools.ChildRequest) (any, error) {
	// Give our slot back while the child runs: a loop of playbook tools
	// would otherwise hold every slot and starve its own children.
	<-e.d.sem
	defer func() { e.d.sem <- struct{}{} }()
	child, err := e.d.flow.Start(ctx, flow.ChildStart{Path: req.Path, Version: req.Version, Payload: req.Payload, Parent: e.parent,
		ParentCommand: e.command, ParentAttempt: e.attempt})
	if err != nil {
		return nil, &tools.Error{Kind: "playbook", Message: fmt.Sprintf("start child %s: %v (local runs register the playbooks in the main file's directory)", req.Path, err)}
	}
	ex, err := e.d.wait(ctx, child.ExecutionID, nil)
	if err != nil {
		return nil, err
	}
	if ex.Status != api.ExecCompleted {
		return nil, &tools.Error{Kind: "playbook", Message: fmt.Sprintf("child execution %d of %s %s: %s", ex.ExecutionID, req.Path, ex.Status, ex.Error)}
	}
	raw := ex.Result
	if req.ReturnStep != "" {
		// The same rule as the distributed runtime: the last
		// command.completed or loop.done of that step.
		evs, err := store.ReadValue(ctx, e.d.st, func(q store.Querier) ([]store.Event, error) {
			return q.EventList(ctx, ex.ExecutionID)
		})
		if err != nil {
			return nil, err
		}
		raw = nil
		for _, ev := range evs {
			if ev.Step == req.ReturnStep && (ev.EventType == api.EvCommandCompleted || ev.EventType == api.EvLoopDone) {
				raw = ev.Result
			}
		}
		if raw == nil {
			return nil, &tools.Error{Kind: "playbook", Message: fmt.Sprintf("child execution %d never completed return_step %q", ex.ExecutionID, req.ReturnStep)}
		}
		if raw, err = store.ReadValue(ctx, e.d.st, func(q store.Querier) (json.RawMessage, error) {
			return flow.LoadResult(ctx, q, raw)
		}); err != nil {
			return nil, err
		}
	}
	if len(raw) == 0 {
		return nil, nil
	}
	// json.Number keeps 64-bit ids in the child's result exact.
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	err = d.Decode(&v)
	return v, err
}

// isPlaybook reports whether a YAML document says it is a playbook.
func isPlaybook(b []byte) bool {
	var head struct {
		Kind string `yaml:"kind"`
	}
	return yaml.Unmarshal(b, &head) == nil && head.Kind == "Playbook"
}
