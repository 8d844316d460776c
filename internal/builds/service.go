// Package builds is the server side of pre-aggregate builds
// (materializations): triggering them (manual refresh, a new definition,
// cron, refresh.key_sql, a lost object), the worker protocol (claim,
// heartbeat, complete, fail), promotion of a finished build, and the reaper
// that re-notifies builds whose notification was lost and re-queues those
// whose worker died. The database is the truth: a build is a row of
// preagg_builds, and NATS (or, with NATS_ENABLED=false, this process) only
// runs it.
//
// Two rules hold whatever happens: a pre-aggregate has at most one active
// build, replaced atomically (store.BuildPromote); and a build that fails,
// comes back empty or was made for an outdated definition never replaces a
// good active one.
package builds

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/lifecycle"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/telemetry"
	"github.com/millrace/millrace/internal/warehouse"
)

// Triggers: why a build was started (PreAggBuild.Trigger).
const (
	TriggerManual     = "manual"     // POST .../refresh
	TriggerDefinition = "definition" // no build for the current definition hash
	TriggerCron       = "cron"       // refresh.cron came due
	TriggerKeySQL     = "key_sql"    // refresh.key_sql's value changed
	TriggerPartition  = "partition"  // cron or key_sql on a partitioned pre-aggregate: the update window only
	TriggerMissing    = "missing"    // a worker found the build's Parquet gone
)

// Defaults for Config.
const (
	DefaultScheduleInterval = 5 * time.Second
	DefaultReapInterval     = 2 * time.Second
	DefaultRedeliverAfter   = 30 * time.Second
	// DefaultStaleWorkerAfter: pre-aggregate workers heartbeat a build every
	// few seconds; three missed beats mean the worker died.
	DefaultStaleWorkerAfter = 30 * time.Second
	// DefaultRetryFailedAfter: a pre-aggregate whose build for the current
	// definition failed is not rebuilt on every scheduler pass, only after
	// this (cron, key_sql and manual refreshes are not held back).
	DefaultRetryFailedAfter = 5 * time.Minute
	DefaultKeyEvery         = time.Minute
	DefaultKeyTimeout       = 30 * time.Second
	// heartbeatEvery is how often an in-process build records that it is
	// alive, so the reaper leaves it alone.
	heartbeatEvery = 5 * time.Second
)

// Config configures a Service.
type Config struct {
	// Enabled is PRE_AGGREGATES_ENABLED: false builds nothing (the
	// scheduler does nothing and a refresh is refused).
	Enabled bool
	// NATSEnabled sends builds to pre-aggregate workers over NATS (an
	// outbox row on Subject); otherwise this process builds them with
	// the Builder, at most BuildConcurrency at once.
	NATSEnabled      bool
	Subject          string // default bus.DefaultPreAggBuildSubject
	MaxRows          int64  // PRE_AGGREGATES_MAX_ROWS, unless the pre-aggregate sets max_rows
	BuildConcurrency int    // PRE_AGGREGATE_BUILD_CONCURRENCY (in-process)
	ScheduleInterval time.Duration
	ReapInterval     time.Duration
	RedeliverAfter   time.Duration // a queued build is re-notified after this
	StaleWorkerAfter time.Duration // a building build without a heartbeat for this long is re-queued
	RetryFailedAfter time.Duration
	KeyTimeout       time.Duration // bounds one refresh.key_sql poll
	// RecordTimeout bounds recording an in-process build's outcome once
	// the build has ended (default 10 s).
	RecordTimeout time.Duration
	GCGrace       time.Duration // objects of a replaced build are deleted this long after (WithObjects)
	WorkerID      string        // the in-process builder's identity on claims
}

// Projects is where builds finds projects and their warehouse connections
// (query.Service).
type Projects interface {
	Project(ctx context.Context, name string) (store.Project, error)
	Connection(p store.Project) (warehouse.Conn, error)
}

// Builder runs a claimed build (engine.Engine): the in-process path.
type Builder interface {
	Build(ctx context.Context, b api.ClaimedBuild) (api.BuildComplete, error)
}

// KeyFunc evaluates refresh.key_sql on a warehouse and returns its first
// column of its first row as text ("" for no row or NULL).
type KeyFunc func(ctx context.Context, conn warehouse.Conn, sql string) (string, error)

// Service triggers, hands out, promotes and reaps builds.
type Service struct {
	cfg      Config
	st       *store.Store
	ids      *ids.Generator
	projects Projects
	builder  Builder
	keyFn    KeyFunc
	objects  func(ctx context.Context) (storage.Store, error) // nil: no garbage collection
	log      *slog.Logger
	wake     func() // tells the relay the outbox has rows
	nowFn    func() time.Time

	// inProcess owns the goroutines of in-process builds (see Stop).
	inProcess *lifecycle.Group
	mu        sync.Mutex
	running   map[string]bool // in-process builds started here and not ended
	slots     chan struct{}
}

// Option adjusts a Service.
type Option func(*Service)

// WithBuilder sets the in-process builder (NATS_ENABLED=false).
func WithBuilder(b Builder) Option { return func(s *Service) { s.builder = b } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.nowFn = now } }

// WithKeyFunc replaces how refresh.key_sql is evaluated (tests).
func WithKeyFunc(f KeyFunc) Option { return func(s *Service) { s.keyFn = f } }

// New builds the service. wake may be nil.
func New(cfg Config, st *store.Store, gen *ids.Generator, projects Projects, log *slog.Logger, wake func(), opts ...Option) *Service {
	if cfg.Subject == "" {
		cfg.Subject = bus.DefaultPreAggBuildSubject
	}
	if cfg.BuildConcurrency <= 0 {
		cfg.BuildConcurrency = bus.DefaultPreAggBuildSlots
	}
	if cfg.ScheduleInterval <= 0 {
		cfg.ScheduleInterval = DefaultScheduleInterval
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = DefaultReapInterval
	}
	if cfg.RedeliverAfter <= 0 {
		cfg.RedeliverAfter = DefaultRedeliverAfter
	}
	if cfg.StaleWorkerAfter <= 0 {
		cfg.StaleWorkerAfter = DefaultStaleWorkerAfter
	}
	if cfg.RetryFailedAfter <= 0 {
		cfg.RetryFailedAfter = DefaultRetryFailedAfter
	}
	if cfg.KeyTimeout <= 0 {
		cfg.KeyTimeout = DefaultKeyTimeout
	}
	if cfg.RecordTimeout <= 0 {
		cfg.RecordTimeout = recordTimeout
	}
	if cfg.GCGrace <= 0 {
		cfg.GCGrace = DefaultGCGrace
	}
	if cfg.WorkerID == "" {
		cfg.WorkerID = "server-inprocess"
	}
	if wake == nil {
		wake = func() {}
	}
	s := &Service{cfg: cfg, st: st, ids: gen, projects: projects, keyFn: warehouseKey, log: log, wake: wake, nowFn: time.Now,
		inProcess: lifecycle.New(context.Background()), running: map[string]bool{}, slots: make(chan struct{}, cfg.BuildConcurrency)}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Service) now() time.Time { return s.nowFn().UTC().Truncate(time.Microsecond) }

// Config returns the effective configuration.
func (s *Service) Config() Config { return s.cfg }

// Stop ends in-process builds (each is recorded failed as interrupted, and
// the previous active build keeps serving) and waits for them.
func (s *Service) Stop() { _ = s.inProcess.Stop() }

// target is one declared pre-aggregate with what builds need to know of it.
type target struct {
	project store.Project
	model   *semantic.Model
	preagg  *semantic.PreAggregate
	hash    string
}

func (t target) key() string { return t.project.Name + "/" + t.model.Name + "/" + t.preagg.Name }

// models reads a project's models from the store. (query.Service owns
// writing them; reading the rows directly keeps builds independent of it.)
func (s *Service) models(ctx context.Context, projectID int64) ([]semantic.Model, error) {
	rows, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.SemanticModel, error) {
		return q.ModelList(ctx, projectID)
	})
	if err != nil {
		return nil, err
	}
	out := make([]semantic.Model, 0, len(rows))
	for _, r := range rows {
		var m semantic.Model
		if err := json.Unmarshal(r.Definition, &m); err != nil {
			return nil, fmt.Errorf("model %s of project %d: stored definition unreadable: %w", r.Name, projectID, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// resolve finds a declared pre-aggregate of project p.
func (s *Service) resolve(ctx context.Context, p store.Project, model, preAgg string) (target, error) {
	row, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.SemanticModel, error) {
		return q.ModelGet(ctx, p.ProjectID, model)
	})
	if errors.Is(err, store.ErrNotFound) {
		return target{}, errorf(ErrModelNotFound, "project %s has no model %q", p.Name, model)
	}
	if err != nil {
		return target{}, err
	}
	var m semantic.Model
	if err := json.Unmarshal(row.Definition, &m); err != nil {
		return target{}, fmt.Errorf("model %s: stored definition unreadable: %w", model, err)
	}
	for i := range m.PreAggregates {
		if m.PreAggregates[i].Name == preAgg {
			pa := &m.PreAggregates[i]
			return target{project: p, model: &m, preagg: pa, hash: semantic.PreAggHash(&m, pa)}, nil
		}
	}
	return target{}, errorf(ErrPreAggNotFound, "model %s of project %s declares no pre-aggregate %q", model, p.Name, preAgg)
}

func (s *Service) projectByID(ctx context.Context, id int64) (store.Project, error) {
	return store.ReadValue(ctx, s.st, func(q store.Querier) (store.Project, error) {
		return q.ProjectGetByID(ctx, id)
	})
}

// recentLimit is how many of a pre-aggregate's newest builds a trigger
// decision looks at (pending builds are always among the newest).
const recentLimit = 20

// recent returns the pre-aggregate's newest builds, newest first.
func recent(ctx context.Context, q store.Querier, t target) ([]store.PreAggBuild, error) {
	return q.BuildList(ctx, t.project.ProjectID, t.model.Name, t.preagg.Name, 0, recentLimit)
}

// pendingFor returns a queued or building build made for hash, if any.
func pendingFor(list []store.PreAggBuild, hash string) *store.PreAggBuild {
	for i := range list {
		b := &list[i]
		if (b.Status == api.BuildQueued || b.Status == api.BuildBuilding) && b.DefHash == hash {
			return b
		}
	}
	return nil
}

func activeOf(ctx context.Context, q store.Querier, t target) (*store.PreAggBuild, error) {
	list, err := q.BuildsActive(ctx, t.project.ProjectID)
	if err != nil {
		return nil, err
	}
	for i := range list {
		if list[i].Model == t.model.Name && list[i].PreAggregate == t.preagg.Name {
			return &list[i], nil
		}
	}
	return nil, nil
}

// Trigger starts a build of a declared pre-aggregate, unless one for its
// current definition is already queued or building: that one is returned
// instead (a refresh never piles up duplicates). A manual or "missing"
// build recomputes everything.
func (s *Service) Trigger(ctx context.Context, project, model, preAgg, trigger string) (store.PreAggBuild, error) {
	if !s.cfg.Enabled {
		return store.PreAggBuild{}, errorf(ErrDisabled, "pre-aggregates are disabled (PRE_AGGREGATES_ENABLED=false): nothing is built")
	}
	p, err := s.projects.Project(ctx, project)
	if err != nil {
		return store.PreAggBuild{}, err
	}
	t, err := s.resolve(ctx, p, model, preAgg)
	if err != nil {
		return store.PreAggBuild{}, err
	}
	return s.triggerFull(ctx, t, trigger)
}

// OnObjectLost starts one full rebuild of a pre-aggregate whose Parquet a
// worker found missing (query.Service's fallback calls it). Many queries
// failing over at once start one build.
func (s *Service) OnObjectLost(ctx context.Context, projectID int64, model, preAgg string) error {
	if !s.cfg.Enabled {
		return nil
	}
	p, err := s.projectByID(ctx, projectID)
	if err != nil {
		return err
	}
	t, err := s.resolve(ctx, p, model, preAgg)
	if err != nil {
		return err
	}
	b, err := s.triggerFull(ctx, t, TriggerMissing)
	if err == nil {
		s.log.Warn("a pre-aggregate's materialization is missing; rebuilding", "pre_aggregate", t.key(), "build", b.BuildUUID)
	}
	return err
}

// triggerFull inserts a full build of t unless one is pending. It takes the
// pre-aggregate's state with compare-and-set in the same transaction, so
// concurrent triggers (several servers, many fallbacks) insert one build:
// the losers retry, and then find it pending.
func (s *Service) triggerFull(ctx context.Context, t target, trigger string) (store.PreAggBuild, error) {
	for attempt := 0; ; attempt++ {
		st, err := s.state(ctx, t)
		if err != nil {
			return store.PreAggBuild{}, err
		}
		list, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) { return recent(ctx, q, t) })
		if err != nil {
			return store.PreAggBuild{}, err
		}
		if b := pendingFor(list, t.hash); b != nil {
			return *b, nil
		}
		b, err := s.insert(ctx, t, st, st, trigger, nil)
		if errors.Is(err, store.ErrConflict) && attempt < 10 {
			continue // another writer moved the state: look again
		}
		return b, err
	}
}

// state reads the pre-aggregate's refresh state (Version 0 when it has none).
func (s *Service) state(ctx context.Context, t target) (store.PreAggState, error) {
	st, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.PreAggState, error) {
		return q.PreAggStateGet(ctx, t.project.ProjectID, t.model.Name, t.preagg.Name)
	})
	if errors.Is(err, store.ErrNotFound) {
		return store.PreAggState{ProjectID: t.project.ProjectID, Model: t.model.Name, PreAggregate: t.preagg.Name}, nil
	}
	return st, err
}

// insert writes, in one transaction, the pre-aggregate's new state (a
// compare-and-set from prev's version: ErrConflict if another writer got
// there first) and, when trigger is set, a queued build with its
// notification. rebuild lists the partition keys to recompute (nil: all).
func (s *Service) insert(ctx context.Context, t target, prev, next store.PreAggState, trigger string, rebuild []string) (store.PreAggBuild, error) {
	now := s.now()
	next.ProjectID, next.Model, next.PreAggregate, next.UpdatedAt = t.project.ProjectID, t.model.Name, t.preagg.Name, now
	var b store.PreAggBuild
	if trigger != "" {
		b = store.PreAggBuild{BuildUUID: newUUID(), ProjectID: t.project.ProjectID, Model: t.model.Name, PreAggregate: t.preagg.Name,
			DefHash: t.hash, Status: api.BuildQueued, Trigger: trigger, Publishes: 1, PublishedAt: &now, CreatedAt: now, UpdatedAt: now}
		if rebuild != nil {
			b.Rebuild, _ = json.Marshal(rebuild)
		}
	}
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		if err := tx.PreAggStateCAS(ctx, next, prev.Version); err != nil {
			return err
		}
		if trigger == "" {
			return nil
		}
		if err := tx.BuildInsert(ctx, b); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, b.BuildUUID, b.BuildUUID, now)
	})
	if err != nil || trigger == "" {
		return b, err
	}
	mTriggered.WithLabelValues(trigger).Inc()
	s.log.Info("pre-aggregate build queued", "pre_aggregate", t.key(), "build", b.BuildUUID, "trigger", trigger, "rebuild", rebuild)
	s.notified(b.BuildUUID)
	return b, nil
}

// enqueue writes a build's outbox row inside tx (NATS path only; the
// in-process path starts the build after the commit).
func (s *Service) enqueue(ctx context.Context, tx store.Tx, uuid, msgID string, now time.Time) error {
	if !s.cfg.NATSEnabled {
		return nil
	}
	payload, _ := json.Marshal(bus.PreAggBuildJob{JobID: msgID, Payload: bus.PreAggBuildJobPayload{MaterializationUUID: uuid}})
	return tx.OutboxInsert(ctx, store.OutboxMsg{ID: s.ids.Next(), Subject: s.cfg.Subject, MsgID: msgID, Payload: payload,
		CreatedAt: now, AvailableAt: now, TraceParent: telemetry.TraceParent(ctx)})
}

// notified runs after a commit that queued (or re-queued) a build: it wakes
// the relay, or starts the build here.
func (s *Service) notified(uuid string) {
	if s.cfg.NATSEnabled {
		s.wake()
		return
	}
	s.startInProcess(uuid)
}

func republishID(b store.PreAggBuild) string { return fmt.Sprintf("%s#%d", b.BuildUUID, b.Publishes) }

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
