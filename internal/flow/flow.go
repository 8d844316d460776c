// Package flow owns the lifecycle of executions: registering playbooks,
// starting executions, claims and leases, and applying worker reports. Every
// operation is one store transaction that appends to the event log, updates
// the projections and, when the engine decides new work is due, writes the
// command.issued event together with its outbox row. The HTTP server is a
// thin layer over this package; the relay publishes what it leaves in the
// outbox.
package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/telemetry"
)

// Config configures a Service.
type Config struct {
	// LeaseTTL is the claim lease length; workers heartbeat at a third of
	// it. It must be positive (package config owns the default).
	LeaseTTL time.Duration
	// CatalogCacheTTL bounds how long a submit trusts the cached latest
	// version of a path (MILLRACE_CATALOG_CACHE_SECONDS); 0 reads the
	// catalog on every submit. See catalogCache.
	CatalogCacheTTL time.Duration
	// OnRegister is called after a register committed, to tell the other
	// servers (may be nil). It must not block.
	OnRegister func(store.CatalogEntry)
	// MaxChildDepth bounds how deep child playbooks nest
	// (MILLRACE_MAX_CHILD_DEPTH; 0: DefaultMaxChildDepth).
	MaxChildDepth int
	// Templates bounds every rendering (MILLRACE_TEMPLATE_TIMEOUT_MS,
	// MILLRACE_TEMPLATE_MAX_BYTES, MILLRACE_LOOP_MAX_ITEMS); zero fields
	// take engine's defaults.
	Templates engine.Limits
	// MaxWorkloadBytes bounds a workload with its payload, as JSON
	// (MILLRACE_MAX_WORKLOAD_BYTES); 0 is DefaultMaxWorkloadBytes.
	MaxWorkloadBytes int
	// Stopping ends every rendering in progress when it is done: the
	// server cancels it as it begins to stop, so a rendering never holds
	// a shutdown for its whole budget (nil: never).
	Stopping context.Context
}

// Service is the flow lifecycle over a store.
type Service struct {
	st     *store.Store
	ids    *ids.Generator
	cfg    Config
	kinds  playbook.KindSet
	log    *slog.Logger
	wake   func()   // tells the relay a notification is pending
	cache  sync.Map // catalog_id -> *playbook.Playbook
	graphs sync.Map // *playbook.Playbook -> *engine.Graph
	states *stateCache
	nowFn  func() time.Time

	catalog *catalogCache // what a submit runs: (path, version) -> entry
}

// New builds a Service. kinds is the set of tool kinds the workers can run;
// wake is called after a commit that made a notification pending (may be
// nil).
func New(st *store.Store, gen *ids.Generator, cfg Config, kinds playbook.KindSet, log *slog.Logger, wake func()) *Service {
	if wake == nil {
		wake = func() {}
	}
	s := &Service{st: st, ids: gen, cfg: cfg, kinds: kinds, log: log, wake: wake, nowFn: time.Now,
		states: newStateCache(DefaultStateCacheSize, DefaultStateCacheBytes)}
	s.catalog = newCatalogCache(DefaultCatalogCacheSize, cfg.CatalogCacheTTL, func() time.Time { return s.nowFn() })
	return s
}

// Store returns the underlying store.
func (s *Service) Store() *store.Store { return s.st }

// LeaseTTL is the configured lease length.
func (s *Service) LeaseTTL() time.Duration { return s.cfg.LeaseTTL }

func (s *Service) now() time.Time { return s.nowFn().UTC().Truncate(time.Microsecond) }

// Register validates content and stores it as the next version of its path.
func (s *Service) Register(ctx context.Context, content string) (store.CatalogEntry, error) {
	return s.RegisterFile(ctx, "", content)
}

// RegisterFile is Register for content read from file, which problems
// name (file:line) instead of "playbook.yaml".
func (s *Service) RegisterFile(ctx context.Context, file, content string) (store.CatalogEntry, error) {
	if file == "" {
		file = "playbook.yaml"
	}
	pb, err := playbook.Parse(file, []byte(content), s.kinds)
	if err != nil {
		return store.CatalogEntry{}, errorf(ErrInvalidPlaybook, "%v", err)
	}
	var entry store.CatalogEntry
	id := s.ids.Next()
	err = s.st.Do(ctx, id, func(ctx context.Context, tx store.Tx) error {
		var err error
		entry, err = tx.CatalogInsert(ctx, id, pb.Metadata.Path, pb.Metadata.Name, content, s.now())
		return err
	})
	if err != nil {
		return store.CatalogEntry{}, err
	}
	s.cache.Store(entry.CatalogID, pb)
	// Before returning: a submit to this server after the register runs
	// the new version.
	s.catalog.registered(entry)
	if s.cfg.OnRegister != nil {
		s.cfg.OnRegister(entry)
	}
	return entry, nil
}

// Registered records a version another server registered (told over
// NATS): submits of its path run it from now on.
func (s *Service) Registered(e store.CatalogEntry) {
	s.catalog.registered(e)
}

// catalogEntry returns the catalog entry a submit of (path, version) runs,
// from the catalog cache or, on a miss, through q.
func (s *Service) catalogEntry(ctx context.Context, q store.Querier, path string, version int) (store.CatalogEntry, error) {
	if e, ok := s.catalog.get(path, version); ok {
		return e, nil
	}
	e, err := q.CatalogGet(ctx, path, version)
	if err == nil {
		s.catalog.put(e, version == 0)
	}
	return e, err
}

// Warnings returns what validating a registered playbook flagged without
// refusing it (see playbook.Playbook.Warnings); nil when there is nothing
// or the entry was not registered by this service.
func (s *Service) Warnings(catalogID int64) playbook.Problems {
	if v, ok := s.cache.Load(catalogID); ok {
		return v.(*playbook.Playbook).Warnings
	}
	return nil
}

// playbookFor returns the parsed playbook of a catalog entry, parsing once.
func (s *Service) playbookFor(ctx context.Context, q store.Querier, catalogID int64) (*playbook.Playbook, error) {
	if v, ok := s.cache.Load(catalogID); ok {
		return v.(*playbook.Playbook), nil
	}
	entry, err := q.CatalogGetByID(ctx, catalogID)
	if err != nil {
		return nil, fmt.Errorf("load playbook %d: %w", catalogID, err)
	}
	pb, err := playbook.Parse(entry.Path, []byte(entry.Content), s.kinds)
	if err != nil {
		// Registered playbooks were valid once; a stricter build may now
		// refuse them. Say so rather than guessing.
		return nil, fmt.Errorf("playbook %s v%d no longer validates: %w", entry.Path, entry.Version, err)
	}
	s.cache.Store(catalogID, pb)
	return pb, nil
}

// Execute starts an execution of path (version 0 = latest). payload keys
// override workload keys.
func (s *Service) Execute(ctx context.Context, path string, version int, payload map[string]any) (store.Execution, error) {
	return s.ExecuteChild(ctx, path, version, payload, 0)
}

// ExecuteChild is Execute for a child of parent (0 = no parent).
func (s *Service) ExecuteChild(ctx context.Context, path string, version int, payload map[string]any, parent int64) (store.Execution, error) {
	return s.Start(ctx, ChildStart{Path: path, Version: version, Payload: payload, Parent: parent})
}

// apply finishes the execution inside tx as plan says. It returns the
// commands a parent waiting for this child issued (see childEnded).
func (s *Service) apply(ctx context.Context, tx store.Tx, exec *store.Execution, plan engine.Plan, now time.Time) (int, error) {
	if !plan.Done {
		return 0, nil
	}
	status, evType := api.ExecCompleted, api.EvPlaybookCompleted
	if plan.Failed {
		status, evType = api.ExecFailed, api.EvPlaybookFailed
		// Stop sibling branches: their workers see 409 on their next report.
		if _, err := tx.CommandCancelExecution(ctx, exec.ExecutionID, now); err != nil {
			return 0, err
		}
	}
	var result json.RawMessage
	if plan.Result != nil {
		b, err := json.Marshal(plan.Result)
		if err != nil {
			return 0, fmt.Errorf("encode execution result: %w", err)
		}
		if result, err = s.storeResult(ctx, tx, b); err != nil {
			return 0, err
		}
	}
	if err := tx.ExecutionFinish(ctx, exec.ExecutionID, status, result, plan.Error, now); err != nil {
		return 0, err
	}
	exec.Status, exec.Result, exec.Error, exec.EndedAt = status, result, plan.Error, &now
	if err := s.event(ctx, tx, store.Event{ExecutionID: exec.ExecutionID, EventType: evType, Status: string(status), Result: result, Error: plan.Error}, now); err != nil {
		return 0, err
	}
	if plan.Failed {
		mExecFailed.Inc()
		if err := s.cancelChildren(ctx, tx, exec.ExecutionID, "failed", now); err != nil {
			return 0, err
		}
	} else {
		mExecCompleted.Inc()
	}
	return s.childEnded(ctx, tx, exec, now)
}

// issueCommand writes command.issued and the command row, whose first
// notification is pending in the row itself, due at c.AvailableAt.
func (s *Service) issueCommand(ctx context.Context, tx store.Tx, c store.Command, now time.Time) (store.Command, error) {
	c.EventID = s.ids.Next()
	c.CommandID = bus.CommandID(c.ExecutionID, c.Step, c.EventID)
	c.Status, c.CreatedAt, c.UpdatedAt = api.CmdIssued, now, now
	if c.AvailableAt.IsZero() {
		c.AvailableAt = now
	}
	c.PublishedAt, c.Publishes = c.AvailableAt, 1
	if err := tx.EventInsert(ctx, store.Event{
		EventID: c.EventID, ExecutionID: c.ExecutionID, EventType: api.EvCommandIssued,
		Step: c.Step, CommandID: c.CommandID, Status: string(api.CmdIssued), Attempt: c.Retry + 1, CreatedAt: now,
	}); err != nil {
		return c, err
	}
	c.TraceParent = telemetry.TraceParent(ctx) // the relay continues this trace
	if err := tx.CommandInsert(ctx, c); err != nil {
		return c, err
	}
	mCmdIssued.Inc()
	return c, nil
}

// renotify asks for a new notification of the command now (the relay
// publishes it to the command's pool, with a fresh Nats-Msg-Id) and
// returns the updated command.
func (s *Service) renotify(ctx context.Context, tx store.Tx, eventID int64, now time.Time) (store.Command, error) {
	return tx.CommandMarkRepublished(ctx, eventID, now, telemetry.TraceParent(ctx))
}

func (s *Service) event(ctx context.Context, tx store.Tx, ev store.Event, now time.Time) error {
	if ev.EventID == 0 {
		ev.EventID = s.ids.Next()
	}
	ev.CreatedAt = now
	return tx.EventInsert(ctx, ev)
}

// Claimed is the reply to a successful claim.
type Claimed struct {
	store.Command
	LeaseTTL time.Duration // how long the lease lasts without a heartbeat
}

// Claim grants workerID a lease on the command. execHint, the command's
// execution id when the caller knows it (from the notification), only
// picks the group-commit shard: all writes of one execution then go
// through one committer and cannot deadlock each other in this process.
//
// token is the claiming worker's token id (auth.ClaimTokenID; 0 without
// one): while it is not 0, only that token may start, heartbeat, report or
// release the command.
func (s *Service) Claim(ctx context.Context, eventID int64, workerID string, execHint, token int64) (Claimed, error) {
	return s.claim(ctx, eventID, workerID, execHint, token, false)
}

// ClaimAndStart is Claim followed by command.started in the same
// transaction, for a worker that runs the command at once: one request
// and one commit instead of two. Both events are recorded.
func (s *Service) ClaimAndStart(ctx context.Context, eventID int64, workerID string, execHint, token int64) (Claimed, error) {
	return s.claim(ctx, eventID, workerID, execHint, token, true)
}

func (s *Service) claim(ctx context.Context, eventID int64, workerID string, execHint, token int64, start bool) (Claimed, error) {
	var cmd store.Command
	err := s.st.Do(ctx, shardKey(execHint, eventID), func(ctx context.Context, tx store.Tx) error {
		now := s.now()
		var err error
		cmd, err = tx.CommandClaim(ctx, store.ClaimParams{EventID: eventID, WorkerID: workerID, Now: now, LeaseTTL: s.cfg.LeaseTTL, TokenID: token, Start: start})
		if err != nil {
			return err
		}
		return s.claimEvents(ctx, tx, cmd, workerID, start, now)
	})
	return s.claimAnswer(ctx, eventID, cmd, err)
}

// claimEvents records a won claim: command.claimed, and command.started
// when the claim also started the command.
func (s *Service) claimEvents(ctx context.Context, tx store.Tx, cmd store.Command, workerID string, start bool, now time.Time) error {
	if err := s.event(ctx, tx, store.Event{
		ExecutionID: cmd.ExecutionID, EventType: api.EvCommandClaimed, Step: cmd.Step,
		CommandID: cmd.CommandID, Status: string(api.CmdClaimed), WorkerID: workerID, Attempt: cmd.Attempt,
	}, now); err != nil || !start {
		return err
	}
	return s.event(ctx, tx, store.Event{
		ExecutionID: cmd.ExecutionID, EventType: api.EvCommandStarted, Step: cmd.Step,
		CommandID: cmd.CommandID, Status: string(api.CmdRunning), WorkerID: workerID, Attempt: cmd.Attempt,
	}, now)
}

// claimAnswer is the caller's answer to a committed claim (err nil) or a
// refused or failed one.
func (s *Service) claimAnswer(ctx context.Context, eventID int64, cmd store.Command, err error) (Claimed, error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Claimed{}, errorf(ErrCommandNotFound, "command %d does not exist", eventID)
	case errors.Is(err, store.ErrConflict):
		mClaimConflicts.Inc()
		return Claimed{}, s.claimConflict(ctx, eventID)
	case err != nil:
		return Claimed{}, err
	}
	mCmdClaimed.Inc()
	return Claimed{Command: cmd, LeaseTTL: s.cfg.LeaseTTL}, nil
}

// claimConflict explains why a claim lost.
func (s *Service) claimConflict(ctx context.Context, eventID int64) error {
	cmd, _ := store.ReadValue(ctx, s.st, func(q store.Querier) (store.Command, error) {
		return q.CommandGet(ctx, eventID)
	})
	if cmd.Status.Terminal() {
		return errorf(ErrNotHolder, "command %d has already ended (%s)", eventID, cmd.Status)
	}
	return errorf(ErrNotHolder, "command %d is claimed by %s (attempt %d) until its lease expires", eventID, cmd.WorkerID, cmd.Attempt)
}

// Report is what a worker says about a command it holds.
type Report struct {
	EventType string
	EventID   int64 // the command's event id
	WorkerID  string
	Attempt   int
	Result    json.RawMessage
	Error     string
	// Retryable is the tool's own verdict on a failure; retry policies
	// read it as output.error.retryable.
	Retryable bool
	// ExecutionID, when known, picks the group-commit shard (see Claim).
	ExecutionID int64
	// Context is what a task list assigned to the execution's context
	// ("ctx.<path>" -> value); merged in when the command completes.
	Context map[string]any
	// TokenID is the reporter's token id (auth.ClaimTokenID): it must be
	// the claim's when the claim recorded one (see Claim).
	TokenID int64
}

func shardKey(execHint, fallback int64) int64 {
	if execHint > 0 {
		return execHint
	}
	return fallback
}

// Ack is the reply to a report.
type Ack struct {
	EventID int64             // the event recorded (0 for heartbeats)
	Status  api.CommandStatus // the command's status afterwards
}

// Apply records a worker's report.
func (s *Service) Apply(ctx context.Context, r Report) (Ack, error) {
	if err := r.valid(); err != nil {
		return Ack{}, err
	}
	var ack Ack
	var woke bool
	err := s.st.Do(ctx, shardKey(r.ExecutionID, r.EventID), func(ctx context.Context, tx store.Tx) error {
		now := s.now()
		var err error
		switch r.EventType {
		case api.EvCommandStarted:
			var cmd store.Command
			if cmd, err = tx.CommandStart(ctx, r.EventID, r.WorkerID, r.Attempt, r.TokenID, now, s.cfg.LeaseTTL); err != nil {
				return err
			}
			ack = Ack{EventID: s.ids.Next(), Status: cmd.Status}
			return s.event(ctx, tx, store.Event{EventID: ack.EventID, ExecutionID: cmd.ExecutionID, EventType: r.EventType,
				Step: cmd.Step, CommandID: cmd.CommandID, Status: string(cmd.Status), WorkerID: r.WorkerID, Attempt: r.Attempt}, now)
		case api.EvCommandHeartbeat:
			// Heartbeats renew the lease only; logging each would bloat the
			// event log with no information.
			var cmd store.Command
			if cmd, err = tx.CommandHeartbeat(ctx, r.EventID, r.WorkerID, r.Attempt, r.TokenID, now, s.cfg.LeaseTTL); err != nil {
				return err
			}
			ack = Ack{Status: cmd.Status}
			return nil
		case api.EvCommandCompleted, api.EvCommandFailed:
			var n int
			ack, n, err = s.finish(ctx, tx, r, now)
			woke = n > 0
			return err
		default:
			return errorf(ErrInvalid, "event_type %q cannot be reported by a worker; use command.started, command.heartbeat, command.completed or command.failed", r.EventType)
		}
	})
	if err != nil {
		return Ack{}, r.refused(err)
	}
	if woke {
		s.wake()
	}
	return ack, nil
}

// valid checks what a report must carry before it reaches the store.
func (r Report) valid() error {
	if r.WorkerID == "" {
		return errorf(ErrInvalid, "worker_id is required")
	}
	if r.Attempt < 1 {
		return errorf(ErrInvalid, "attempt must be >= 1 (use the attempt returned by the claim)")
	}
	if len(r.Result) > 0 && !json.Valid(r.Result) {
		return errorf(ErrInvalidResult, "result is not valid JSON")
	}
	return nil
}

// refused turns the store's refusal of r into the worker's answer; other
// errors pass unchanged.
func (r Report) refused(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(ErrCommandNotFound, "command %d does not exist", r.EventID)
	case errors.Is(err, store.ErrNotYours):
		mClaimNotYours.Inc()
		return notYours(r.EventID, r.WorkerID, r.Attempt)
	case errors.Is(err, store.ErrConflict):
		return errorf(ErrNotHolder, "worker %s does not hold attempt %d of command %d (lease lost, re-claimed, cancelled or already ended)", r.WorkerID, r.Attempt, r.EventID)
	}
	return err
}

// finish applies command.completed/failed and advances the execution.
func (s *Service) finish(ctx context.Context, tx store.Tx, rep Report, now time.Time) (Ack, int, error) {
	f, err := s.finishRun(ctx, tx, rep, now)
	if err != nil || f.execID == 0 {
		return f.ack, f.issued, err
	}
	if err := s.touchFinished(ctx, tx, f); err != nil {
		return Ack{}, 0, err
	}
	return f.ack, f.issued, nil
}

// touchFinished gives the execution a finish changed a fresh revision.
func (s *Service) touchFinished(ctx context.Context, tx store.Tx, f finished) error {
	// Whatever this changed, a cached state of the execution is now stale,
	// on this server and any other: give it a fresh revision, and cache
	// this run's state under it. The cache entry is written before the
	// commit; if the transaction rolls back, the token never reaches the
	// store and the entry can never match (see statecache.go).
	rev := s.ids.Next()
	if err := tx.ExecutionTouch(ctx, f.execID, rev); err != nil {
		return err
	}
	if f.run != nil && f.run.exec.Status == api.ExecRunning {
		s.states.put(f.execID, f.run.state(rev))
	} else {
		s.states.drop(f.execID)
	}
	return nil
}

// finished is what finishRun did.
type finished struct {
	ack    Ack   // the worker's answer
	issued int   // commands issued by advancing the run
	execID int64 // the execution locked; 0 when none was
	run    *run  // the advanced run; nil when the execution was not advanced
}

// finishRun records the report and advances the run.
func (s *Service) finishRun(ctx context.Context, tx store.Tx, rep Report, now time.Time) (finished, error) {
	// Lock the execution first so that two branches finishing at once see
	// each other's outcome when deciding whether the execution is done.
	cur, exec, r, err := s.lockForFinish(ctx, tx, rep, now)
	if err != nil {
		return finished{}, err
	}
	p, err := s.prepareFinish(rep, cur, r)
	if err != nil {
		return finished{}, err
	}
	stored, err := s.storeResult(ctx, tx, p.projectedResult)
	if err != nil {
		return finished{}, err
	}
	cmd, err := tx.CommandFinish(ctx, p.params(rep, stored, now))
	if err != nil {
		return finished{}, err
	}
	return s.afterFinish(ctx, tx, rep, p, stored, cmd, exec, r, now)
}

// preparedFinish is what a report decides before the command is finished.
type preparedFinish struct {
	status          api.CommandStatus // what the worker reported
	projected       api.CommandStatus // what the command records (a failure continued past is completed)
	projectedResult json.RawMessage
	decision        engine.Decision
	published       map[string]any
	res             any
}

func (p preparedFinish) params(rep Report, stored json.RawMessage, now time.Time) store.FinishParams {
	return store.FinishParams{EventID: rep.EventID, WorkerID: rep.WorkerID, Attempt: rep.Attempt,
		TokenID: rep.TokenID, Status: p.projected, Result: stored, Error: rep.Error, Now: now}
}

// prepareFinish decides, from the locked run (nil when the execution or
// the command ended), what the report records. It writes nothing.
func (s *Service) prepareFinish(rep Report, cur store.Command, r *run) (preparedFinish, error) {
	if len(rep.Context) > 0 && r != nil {
		if step := r.pb.ByName[cur.Step]; step != nil && len(step.Tasks) == 0 {
			// Only a task list assigns context in the worker; any other
			// step's set is the server's to apply.
			return preparedFinish{}, errorf(ErrInvalid, "context: command %d of step %s is not a task list; only a task list's report carries context", rep.EventID, cur.Step)
		}
	}
	status := api.CmdCompleted
	if rep.EventType == api.EvCommandFailed {
		status = api.CmdFailed
	}
	var res any
	if len(rep.Result) > 0 {
		// json.Number keeps 64-bit ids exact in the scope and in the
		// execution's result, which is re-encoded from this value.
		d := json.NewDecoder(bytes.NewReader(rep.Result))
		d.UseNumber()
		if err := d.Decode(&res); err != nil {
			return preparedFinish{}, errorf(ErrInvalidResult, "result is not valid JSON: %v", err)
		}
	}

	// Decide before recording, so that a failure the policy says to
	// continue past is projected as a completed step (the event log keeps
	// the command.failed fact).
	decision := engine.Decision{Do: playbook.DoContinue}
	if status == api.CmdFailed {
		decision.Do = playbook.DoFail
	}
	if r != nil {
		pb := r.pb
		// A cursor loop's policy is applied per row, by the worker.
		if step := pb.ByName[cur.Step]; step != nil && step.Policy != nil && (step.Loop == nil || step.Loop.Mode != playbook.LoopCursor) {
			scope := r.scope
			if cur.LoopID != 0 {
				scope = r.iterationScope(step, cur)
			}
			d, err := engine.Decide(step.Policy, scope, engine.Outcome{Status: engine.OutcomeStatus(status), Result: res, Error: rep.Error,
				Retryable: rep.Retryable, Attempt: cur.Retry + 1})
			if engine.IsCancelled(err) {
				return preparedFinish{}, err
			} else if err != nil {
				decision = engine.Decision{Do: playbook.DoFail, Reason: err.Error()}
			} else {
				decision = d
			}
		}
	}
	var published map[string]any
	if status == api.CmdCompleted && decision.Continues() {
		// A task list's ctx writes reach the execution (NoETL's task
		// sequences do the same); the step policy's own set goes after.
		published = rep.Context
	}
	projected, projectedResult := status, rep.Result
	if status == api.CmdFailed && decision.Continues() { // break on a single tool is continue
		projected = api.CmdCompleted
		env := map[string]any{"status": "error", "error": rep.Error, "data": res}
		res = env
		projectedResult, _ = json.Marshal(env)
	}
	return preparedFinish{status: status, projected: projected, projectedResult: projectedResult,
		decision: decision, published: published, res: res}, nil
}

// afterFinish records a finished command (its events) and advances the
// run: the part of a report after the execution was locked and the
// command finished, shared by Apply and ApplyMany.
func (s *Service) afterFinish(ctx context.Context, tx store.Tx, rep Report, p preparedFinish, stored json.RawMessage,
	cmd store.Command, exec store.Execution, r *run, now time.Time) (finished, error) {
	status, projected, projectedResult := p.status, p.projected, p.projectedResult
	ack := Ack{EventID: s.ids.Next(), Status: cmd.Status}
	evResult := stored // the common case: stored once, referenced twice
	var err error
	if !bytes.Equal(projectedResult, rep.Result) {
		if evResult, err = s.storeResult(ctx, tx, rep.Result); err != nil {
			return finished{}, err
		}
	}
	if err := s.event(ctx, tx, store.Event{EventID: ack.EventID, ExecutionID: cmd.ExecutionID, EventType: rep.EventType, Step: cmd.Step,
		CommandID: cmd.CommandID, Status: string(status), Result: evResult, Error: rep.Error, WorkerID: rep.WorkerID, Attempt: rep.Attempt}, now); err != nil {
		return finished{}, err
	}
	if err := s.event(ctx, tx, store.Event{ExecutionID: cmd.ExecutionID, EventType: api.EvStepExit, Step: cmd.Step,
		CommandID: cmd.CommandID, Status: string(projected)}, now); err != nil {
		return finished{}, err
	}
	if status == api.CmdCompleted {
		mCmdCompleted.Inc()
	} else {
		mCmdFailed.Inc()
	}
	if r == nil {
		return finished{ack: ack, execID: exec.ExecutionID}, nil // cancelled or ended meanwhile: record the fact, decide nothing
	}
	for i := range r.cmds {
		if r.cmds[i].EventID == cmd.EventID {
			r.cmds[i] = cmd
		}
	}
	if err := r.commandFinished(cmd, p.decision, p.published, p.res); err != nil {
		return finished{}, err
	}
	return finished{ack: ack, issued: r.issued, execID: exec.ExecutionID, run: r}, nil
}

// lockForFinish locks the reported command's execution and returns the
// command, the execution (with its revision) and, when the execution is
// running and the command has not ended, the execution's run (nil
// otherwise). The run comes from the state cache when the revision matches,
// else from the store. With the execution id the worker sent (from the
// notification), the command is found among the run's rows, saving a read;
// a wrong or missing hint falls back to reading the command first.
func (s *Service) lockForFinish(ctx context.Context, tx store.Tx, rep Report, now time.Time) (store.Command, store.Execution, *run, error) {
	if rep.ExecutionID > 0 {
		exec, err := tx.LockExecution(ctx, rep.ExecutionID)
		if err == nil && exec.Status == api.ExecRunning {
			c, r, ok, err := s.inRun(ctx, tx, exec, rep.EventID, now)
			if err != nil || ok {
				return c, exec, r, err
			}
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.Command{}, store.Execution{}, nil, err
		}
	}
	cur, err := tx.CommandGet(ctx, rep.EventID)
	if err != nil {
		return store.Command{}, store.Execution{}, nil, err
	}
	exec, err := tx.LockExecution(ctx, cur.ExecutionID)
	if err != nil || exec.Status != api.ExecRunning || cur.Status.Terminal() {
		return cur, exec, nil, err
	}
	r, err := s.runFor(ctx, tx, exec, now)
	if err != nil {
		return store.Command{}, store.Execution{}, nil, err
	}
	return cur, exec, r, nil
}

// inRun finds command eventID among the rows of a locked, running
// execution's run: ok false when it is not one of them. The run is nil
// when the command has ended.
func (s *Service) inRun(ctx context.Context, tx store.Tx, exec store.Execution, eventID int64, now time.Time) (store.Command, *run, bool, error) {
	r, err := s.runFor(ctx, tx, exec, now)
	if err != nil {
		return store.Command{}, nil, false, err
	}
	for _, c := range r.cmds {
		if c.EventID != eventID {
			continue
		}
		if c.Status.Terminal() {
			return c, nil, true, nil
		}
		return c, r, true, nil
	}
	return store.Command{}, nil, false, nil
}

// runFor returns the run of a locked, running execution: from the state
// cache when it holds this revision, else rebuilt from the store.
func (s *Service) runFor(ctx context.Context, tx store.Tx, exec store.Execution, now time.Time) (*run, error) {
	pb, err := s.playbookFor(ctx, tx, exec.CatalogID)
	if err != nil {
		return nil, err
	}
	if st := s.states.take(exec.ExecutionID, exec.Revision); st != nil {
		return s.runFromState(ctx, tx, &exec, pb, now, st), nil
	}
	return s.loadRun(ctx, tx, &exec, pb, now)
}

// Release gives up a lease at once so another worker can claim the command
// without waiting for it to expire (used on worker shutdown).
// token is the caller's token id, as for Apply.
func (s *Service) Release(ctx context.Context, eventID int64, workerID string, attempt int, token int64) error {
	err := s.st.Do(ctx, eventID, func(ctx context.Context, tx store.Tx) error {
		now := s.now()
		// A zero TTL leaves the lease expired "now": claimable at once.
		if _, err := tx.CommandHeartbeat(ctx, eventID, workerID, attempt, token, now, 0); err != nil {
			return err
		}
		// Re-notify right away rather than waiting for the reaper.
		_, err := s.renotify(ctx, tx, eventID, now)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(ErrCommandNotFound, "command %d does not exist", eventID)
	case errors.Is(err, store.ErrNotYours):
		mClaimNotYours.Inc()
		return notYours(eventID, workerID, attempt)
	case errors.Is(err, store.ErrConflict):
		return errorf(ErrNotHolder, "worker %s does not hold attempt %d of command %d", workerID, attempt, eventID)
	case err != nil:
		return err
	}
	s.wake()
	return nil
}

// notYours refuses a worker that names a claim's holder with another token.
func notYours(eventID int64, workerID string, attempt int) error {
	return errorf(ErrClaimNotYours, "command %d (worker %s, attempt %d) was claimed with another worker token; only the token that claimed it may heartbeat, report or release it", eventID, workerID, attempt)
}

// Cancel stops a running execution.
func (s *Service) Cancel(ctx context.Context, execID int64) (store.Execution, error) {
	return s.endByRequest(ctx, execID, api.ExecCancelled, "cancelled by request", api.EvExecCancelled, "was cancelled")
}

// endByRequest ends a running execution from outside its flow (a cancel,
// an operator's fail) in one transaction: its commands cancelled, its
// status and terminal event written, its running children cancelled (why
// says so in theirs), and a parent waiting for it told.
func (s *Service) endByRequest(ctx context.Context, execID int64, status api.ExecStatus, msg, evType, why string) (store.Execution, error) {
	var exec store.Execution
	woke := 0
	err := s.st.Do(ctx, execID, func(ctx context.Context, tx store.Tx) error {
		var err error
		if exec, err = tx.LockExecution(ctx, execID); err != nil {
			return err
		}
		if exec.Status != api.ExecRunning {
			return errorf(ErrExecutionEnded, "execution %d is already %s", execID, exec.Status)
		}
		now := s.now()
		if _, err := tx.CommandCancelExecution(ctx, execID, now); err != nil {
			return err
		}
		if err := tx.ExecutionFinish(ctx, execID, status, nil, msg, now); err != nil {
			return err
		}
		exec.Status, exec.EndedAt, exec.Error = status, &now, msg
		if err := tx.ExecutionTouch(ctx, execID, s.ids.Next()); err != nil {
			return err
		}
		ev := store.Event{ExecutionID: execID, EventType: evType, Status: string(status)}
		if status == api.ExecFailed {
			ev.Error = msg
		}
		if err := s.event(ctx, tx, ev, now); err != nil {
			return err
		}
		if err := s.cancelChildren(ctx, tx, execID, why, now); err != nil {
			return err
		}
		woke, err = s.childEnded(ctx, tx, &exec, now) // a parent waiting for it fails its step
		return err
	})
	if err == nil {
		s.states.drop(execID)
	}
	if woke > 0 {
		s.wake()
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Execution{}, errorf(ErrExecutionNotFound, "execution %d does not exist", execID)
	}
	return exec, err
}
