package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/preagg/engine"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/warehouse"
)

// A query's kind and target (store.Query.Kind, Target).
const (
	KindSQL    = "sql"
	KindMetric = "metric"
	// TargetWarehouse: the query's SQL runs on the project's warehouse
	// (warehouse workers, or this process).
	TargetWarehouse = "warehouse"
	// TargetPreAgg: the query's SQL is DuckDB over a pre-aggregate build
	// (pre-aggregate workers, or this process's Engine).
	TargetPreAgg = "preagg"
)

// PreAggEngine serves a metric query from a pre-aggregate build; the
// server passes its *engine.Engine. A missing object is an error wrapping
// engine.ErrObjectMissing (or storage.ErrNotFound).
type PreAggEngine interface {
	Serve(ctx context.Context, plan api.ServePlan, onColumns func([]warehouse.Column) error, onRow func([]any) error) error
}

// MetricRequest is a metric query submission
// (POST /api/v2/projects/{project}/query/metric-query).
type MetricRequest struct {
	Project         string
	Query           semantic.MetricQuery
	Lane            string // interactive (default) | background
	InvalidateCache bool
	// Bypass sends the query to the warehouse even when a pre-aggregate
	// matches (usePreAggregates: false; miss reason BYPASSED).
	Bypass bool
	User   string
}

// SubmitMetric checks a metric query against its model, routes it (a
// pre-aggregate that matches, else the warehouse) and starts it like a SQL
// query: same statuses, paging, cache, lanes and cancel. The returned
// query's PreAggregate says how it was routed and why.
func (s *Service) SubmitMetric(ctx context.Context, r MetricRequest) (store.Query, error) {
	lane, err := checkLane(r.Lane)
	if err != nil {
		return store.Query{}, err
	}
	p, err := s.Project(ctx, r.Project)
	if err != nil {
		return store.Query{}, err
	}
	if r.Query.ExploreName == "" {
		return store.Query{}, errorf(ErrInvalid, "query.exploreName is required: the name of one of project %s's models", p.Name)
	}
	m, _, err := s.modelOf(ctx, p, r.Query.ExploreName)
	if errors.Is(err, store.ErrNotFound) {
		return store.Query{}, errorf(ErrUnknownModel, "project %s has no model %q (query.exploreName); declare it with POST /api/v2/projects/%s/models or under the project in MILLRACE_PROJECTS_FILE", p.Name, r.Query.ExploreName, p.Name)
	}
	if err != nil {
		return store.Query{}, err
	}
	res, err := semantic.Resolve(&m, r.Query)
	if err != nil {
		return store.Query{}, resolveError(err)
	}
	now := s.now()
	rt, err := s.route(ctx, p, res, !r.Bypass, now)
	if err != nil {
		return store.Query{}, err
	}
	countMatch(rt.meta)
	mq, err := json.Marshal(r.Query)
	if err != nil {
		return store.Query{}, err
	}
	meta, _ := json.Marshal(rt.meta)
	q := store.Query{QueryUUID: newUUID(), ProjectID: p.ProjectID, SQL: rt.sql, Lane: lane,
		CacheKey: MetricCacheKey(p.ProjectID, p.UpdatedAt.UnixMicro(), rt.target, rt.buildUUID, rt.sql, s.cfg.Timezone, r.User),
		Status:   api.QueryPending, CreatedAt: now, UpdatedAt: now,
		Kind: KindMetric, MetricQuery: mq, Target: rt.target, PreAggregate: meta, BuildUUID: rt.buildUUID}
	return s.start(ctx, q, r.InvalidateCache)
}

// countMatch counts a routing decision by result and miss reason.
func countMatch(m api.PreAggregateMeta) {
	switch {
	case m.Hit:
		mPreAgg.WithLabelValues("hit", "").Inc()
	case m.Reason != nil:
		mPreAgg.WithLabelValues("miss", m.Reason.Code).Inc()
	default:
		mPreAgg.WithLabelValues("miss", "").Inc()
	}
}

// targetOf is where q runs ("" is the warehouse, as for SQL queries).
func targetOf(q store.Query) string {
	if q.Target == "" {
		return TargetWarehouse
	}
	return q.Target
}

// MetricCacheKey is a metric query's cache key: CacheKey's parts with the
// compiled SQL, plus its target and the serving build, so that a result
// answered by the warehouse is never handed out as a pre-aggregate hit (or
// the reverse), and a new build starts a new cache entry.
func MetricCacheKey(projectID, projectVersion int64, target, buildUUID, sql, timezone, user string) string {
	return CacheKey(projectID, projectVersion, "metric\x00"+target+"\x00"+buildUUID+"\x00"+strings.TrimSpace(sql), timezone, user)
}

// resolveError turns semantic.Resolve's error into the query error the API
// maps to its code; the message names the field.
func resolveError(err error) error {
	var qe *semantic.QueryError
	if !errors.As(err, &qe) {
		return errorf(ErrInvalid, "%v", err)
	}
	msg := qe.Message
	if qe.FieldID != "" && !strings.Contains(msg, qe.FieldID) {
		msg = fmt.Sprintf("field %q: %s", qe.FieldID, msg)
	}
	switch qe.Code {
	case semantic.CodeUnknownModel:
		return errorf(ErrUnknownModel, "%s", msg)
	case semantic.CodeUnknownField:
		return errorf(ErrUnknownField, "%s", msg)
	case semantic.CodeInvalidFilter:
		return errorf(ErrInvalidFilter, "%s", msg)
	}
	return errorf(ErrInvalid, "%s", msg)
}

// routing is where a metric query runs and why.
type routing struct {
	target    string
	sql       string
	buildUUID string
	meta      api.PreAggregateMeta
}

// route decides between a pre-aggregate and the warehouse and compiles the
// SQL of the one chosen.
func (s *Service) route(ctx context.Context, p store.Project, r *semantic.Resolved, use bool, now time.Time) (routing, error) {
	var d preagg.Decision
	switch {
	case !use:
		d.Reason = &api.MissReason{Code: api.PreAggMissBypassed, Message: "the request set usePreAggregates to false: the warehouse answers it"}
	case !s.cfg.PreAggEnabled:
		d = preagg.Match(r, nil, false, now)
	default:
		var active map[string]preagg.ActiveBuild
		if len(r.Model.PreAggregates) > 0 {
			var err error
			if active, err = s.activeBuilds(ctx, p.ProjectID, r.Model.Name); err != nil {
				return routing{}, err
			}
		}
		d = preagg.Match(r, active, true, now)
		if d.Hit && !s.cfg.NATSEnabled && s.cfg.Engine == nil {
			name := d.PreAgg.Name
			d = preagg.Decision{Reason: &api.MissReason{Code: api.PreAggMissDisabled, PreAggregate: name,
				Message: "this server has no pre-aggregate engine to serve from (with NATS_ENABLED=false the server's own process serves pre-aggregates)"}}
		}
	}
	if d.Hit && d.PreAgg != nil {
		sql, err := preagg.Rewrite(r, d.PreAgg)
		if err != nil {
			return routing{}, fmt.Errorf("rewrite onto pre-aggregate %s: %w", d.PreAgg.Name, err)
		}
		return routing{target: TargetPreAgg, sql: sql, buildUUID: d.Build.BuildUUID, meta: *d.Meta()}, nil
	}
	d.Hit = false
	sql, err := compileFor(p, r)
	if err != nil {
		return routing{}, err
	}
	return routing{target: TargetWarehouse, sql: sql, meta: *d.Meta()}, nil
}

// compileFor compiles r to the SQL of p's warehouse.
func compileFor(p store.Project, r *semantic.Resolved) (string, error) {
	var d semantic.Dialect
	switch p.WarehouseType {
	case "postgres":
		d = semantic.Postgres
	case "duckdb":
		d = semantic.DuckDB
	default:
		return "", errorf(ErrInvalid, "project %s's warehouse type %q has no metric query dialect (postgres or duckdb)", p.Name, p.WarehouseType)
	}
	sql, err := semantic.Compile(r, d)
	if err != nil {
		return "", fmt.Errorf("compile the metric query for %s: %w", d, err)
	}
	return sql, nil
}

// activeBuilds returns the active builds of model's pre-aggregates, by
// pre-aggregate name.
func (s *Service) activeBuilds(ctx context.Context, projectID int64, model string) (map[string]preagg.ActiveBuild, error) {
	rows, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildsActive(ctx, projectID)
	})
	if err != nil {
		return nil, err
	}
	out := map[string]preagg.ActiveBuild{}
	for _, b := range rows {
		if b.Model != model {
			continue
		}
		a := preagg.ActiveBuild{BuildUUID: b.BuildUUID, DefHash: b.DefHash, Rows: b.Rows}
		if b.EndedAt != nil {
			a.BuiltAt = *b.EndedAt
		}
		if b.DataAsOf != nil {
			a.DataAsOf = *b.DataAsOf
		}
		if len(b.Partitions) > 0 {
			if err := json.Unmarshal(b.Partitions, &a.Objects); err != nil {
				return nil, fmt.Errorf("build %s's partitions: %w", b.BuildUUID, err)
			}
		}
		out[b.PreAggregate] = a
	}
	return out, nil
}

// PreAggMeta is how a metric query was routed (nil for a SQL query).
func PreAggMeta(q store.Query) *api.PreAggregateMeta {
	if q.Kind != KindMetric || len(q.PreAggregate) == 0 {
		return nil
	}
	return decoded[api.PreAggregateMeta](q.PreAggregate)
}

// MetricQueryOf is a metric query's request (nil for a SQL query).
func MetricQueryOf(q store.Query) *semantic.MetricQuery {
	if q.Kind != KindMetric || len(q.MetricQuery) == 0 {
		return nil
	}
	return decoded[semantic.MetricQuery](q.MetricQuery)
}

// decoded is the JSON column b decoded, or nil if it does not decode (a
// row written by a later version).
func decoded[T any](b json.RawMessage) *T {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	return &v
}

// servePlan is what serves q (a pre-aggregate target) from its build. A
// build that is gone is an object loss: the query falls back.
func (s *Service) servePlan(ctx context.Context, q store.Query) (api.ServePlan, error) {
	b, err := store.ReadValue(ctx, s.st, func(qq store.Querier) (store.PreAggBuild, error) {
		return qq.BuildGet(ctx, q.BuildUUID)
	})
	if errors.Is(err, store.ErrNotFound) {
		return api.ServePlan{}, fmt.Errorf("build %s is gone: %w", q.BuildUUID, engine.ErrObjectMissing)
	}
	if err != nil {
		return api.ServePlan{}, err
	}
	plan := api.ServePlan{BuildUUID: q.BuildUUID, SQL: q.SQL}
	if len(b.Partitions) > 0 {
		if err := json.Unmarshal(b.Partitions, &plan.Objects); err != nil {
			return plan, fmt.Errorf("build %s's partitions: %w", q.BuildUUID, err)
		}
	}
	if len(plan.Objects) == 0 {
		return plan, fmt.Errorf("build %s lists no objects: %w", q.BuildUUID, engine.ErrObjectMissing)
	}
	return plan, nil
}

// objectLost reports whether err says a build's Parquet is gone: a miss,
// never an error.
func objectLost(err error) bool {
	return errors.Is(err, engine.ErrObjectMissing) || errors.Is(err, storage.ErrNotFound)
}

// serve answers q (a pre-aggregate target) in this process through the
// engine, into the results store.
func (s *Service) serve(ctx context.Context, q store.Query) (store.QueryUpdate, error) {
	if s.cfg.Engine == nil {
		return store.QueryUpdate{}, errors.New("this server has no pre-aggregate engine")
	}
	plan, err := s.servePlan(ctx, q)
	if err != nil {
		return store.QueryUpdate{}, err
	}
	w, err := s.results.Create(q.QueryUUID)
	if err != nil {
		return store.QueryUpdate{}, err
	}
	if err := s.cfg.Engine.Serve(ctx, plan, w.SetColumns, w.Write); err != nil {
		_ = w.Abort()
		return store.QueryUpdate{}, err
	}
	return s.closeWriter(w, q.QueryUUID)
}

// execute runs an in-process query on its target. A pre-aggregate whose
// objects are lost falls back to the warehouse inline (the status stays
// pending), with the miss recorded and a rebuild asked for.
func (s *Service) execute(ctx context.Context, q store.Query, conn warehouse.Conn) (store.QueryUpdate, error) {
	if q.Target != TargetPreAgg {
		return s.run(ctx, q, conn)
	}
	upd, err := s.serve(ctx, q)
	if err == nil || !objectLost(err) || ctx.Err() != nil {
		return upd, err
	}
	fb, err := s.fallbackPlan(ctx, q, api.PreAggMissObjectLost, err.Error())
	if err != nil {
		return store.QueryUpdate{}, err
	}
	now := s.now()
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		q, err = tx.QueryTransition(ctx, q.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryPending, fb.update(), now)
		return err
	})
	if err != nil {
		return store.QueryUpdate{}, err // cancelled meanwhile: the caller's CAS loses too
	}
	s.objectLost(ctx, fb)
	return s.run(ctx, q, conn)
}

// fallback is a pre-aggregate query re-routed to the warehouse.
type fallback struct {
	projectID int64
	model     string
	preAgg    string
	code      string
	sql       string
	meta      json.RawMessage
}

func (f fallback) update() store.QueryUpdate {
	target, none := TargetWarehouse, ""
	return store.QueryUpdate{SQL: &f.sql, Target: &target, PreAggregate: f.meta, BuildUUID: &none}
}

// fallbackPlan recompiles q for the warehouse and records the miss.
func (s *Service) fallbackPlan(ctx context.Context, q store.Query, code, message string) (fallback, error) {
	mq := MetricQueryOf(q)
	if mq == nil {
		return fallback{}, fmt.Errorf("query %s is not a metric query", q.QueryUUID)
	}
	p, err := s.projectByID(ctx, q.ProjectID)
	if err != nil {
		return fallback{}, err
	}
	m, _, err := s.modelOf(ctx, p, mq.ExploreName)
	if err != nil {
		return fallback{}, fmt.Errorf("the pre-aggregate cannot serve this query and model %s cannot be read to run it on the warehouse: %w", mq.ExploreName, err)
	}
	r, err := semantic.Resolve(&m, *mq)
	if err != nil {
		return fallback{}, fmt.Errorf("the pre-aggregate cannot serve this query and it no longer fits model %s: %w", mq.ExploreName, err)
	}
	sql, err := compileFor(p, r)
	if err != nil {
		return fallback{}, err
	}
	name := ""
	if old := PreAggMeta(q); old != nil {
		name = old.Name
	}
	meta, _ := json.Marshal(api.PreAggregateMeta{Name: name,
		Reason: &api.MissReason{Code: code, Message: message, PreAggregate: name}})
	return fallback{projectID: q.ProjectID, model: mq.ExploreName, preAgg: name, code: code, sql: sql, meta: meta}, nil
}

// objectLost tells the builds service (Config.OnObjectLost) that a
// pre-aggregate's materialization is gone, so that it rebuilds it.
func (s *Service) objectLost(ctx context.Context, f fallback) {
	if f.code != api.PreAggMissObjectLost || s.cfg.OnObjectLost == nil || f.preAgg == "" {
		return
	}
	if err := s.cfg.OnObjectLost(context.WithoutCancel(ctx), f.projectID, f.model, f.preAgg); err != nil {
		s.log.Warn("asking for a rebuild of a lost pre-aggregate failed", "model", f.model, "pre_aggregate", f.preAgg, "err", err)
	}
}

// fallbackCodes are the miss reasons a worker may report for a query it
// cannot serve.
var fallbackCodes = map[string]bool{api.PreAggMissObjectLost: true, api.PreAggMissNoBuild: true, api.PreAggMissStale: true}

// Fallback is a pre-aggregate worker's report that it cannot serve the
// query it holds for a reason that is a miss, not an error (its build's
// Parquet is gone): the query goes back to queued with Target warehouse
// and the compiled warehouse SQL, its cacheMetadata.preAggregate becomes a
// miss with that reason, it is published on its warehouse lane, and a
// rebuild is asked for (Config.OnObjectLost). code "" means
// MATERIALIZATION_MISSING.
func (s *Service) Fallback(ctx context.Context, uuid, worker string, token int64, code, message string) (store.Query, error) {
	if code == "" {
		code = api.PreAggMissObjectLost
	}
	if !fallbackCodes[code] {
		return store.Query{}, errorf(ErrInvalid, "code must be %s, %s or %s, got %q", api.PreAggMissObjectLost, api.PreAggMissNoBuild, api.PreAggMissStale, code)
	}
	if message == "" {
		message = "the pre-aggregate worker could not serve the query: " + code
	}
	cur, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.Query, error) {
		return q.QueryGet(ctx, uuid)
	})
	if errors.Is(err, store.ErrNotFound) {
		return cur, errorf(ErrQueryNotFound, "query %s does not exist", uuid)
	}
	if err != nil {
		return cur, err
	}
	if otherToken(cur, worker, token) {
		return cur, notYours(uuid, worker)
	}
	if cur.Status != api.QueryExecuting || cur.WorkerID != worker {
		return cur, errorf(ErrNotHolder, "query %s is %s and held by %q, not %q; fallback refused", uuid, cur.Status, cur.WorkerID, worker)
	}
	if cur.Target != TargetPreAgg {
		return cur, errorf(ErrNotHolder, "query %s runs on the %s, not from a pre-aggregate; nothing to fall back from", uuid, cur.Target)
	}
	fb, err := s.fallbackPlan(ctx, cur, code, message)
	if err != nil {
		// Nothing can answer it: it fails with the reason.
		q, ferr := s.failHeld(ctx, uuid, api.QueryExecuting, worker, err.Error())
		if errors.Is(ferr, store.ErrConflict) {
			return q, errorf(ErrNotHolder, "query %s is %s; fallback refused", uuid, q.Status)
		}
		return q, ferr
	}
	q, err := s.reroute(ctx, uuid, api.QueryExecuting, worker, fb)
	if errors.Is(err, store.ErrConflict) {
		return q, errorf(ErrNotHolder, "query %s is %s (worker %q); fallback refused", uuid, q.Status, q.WorkerID)
	}
	if err != nil {
		return q, err
	}
	s.log.Info("a pre-aggregate query falls back to the warehouse", "query", uuid, "pre_aggregate", fb.preAgg, "code", code)
	return q, nil
}

// rerouteQueued sends a queued pre-aggregate query whose build is gone to
// the warehouse when a worker tries to claim it; the claim gets 409.
func (s *Service) rerouteQueued(ctx context.Context, q store.Query, message string) error {
	fb, err := s.fallbackPlan(ctx, q, api.PreAggMissObjectLost, message)
	if err != nil {
		_, _ = s.failHeld(ctx, q.QueryUUID, api.QueryQueued, "", err.Error())
		return errorf(ErrNotClaimable, "query %s cannot be served: %v", q.QueryUUID, err)
	}
	if _, err := s.reroute(ctx, q.QueryUUID, api.QueryQueued, "", fb); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	return errorf(ErrNotClaimable, "query %s's pre-aggregate build is gone; it was sent to the warehouse instead", q.QueryUUID)
}

// reroute moves a pre-aggregate query held by worker ("" when queued) in
// status from to the warehouse: queued again with fb's SQL and miss, and
// published on its warehouse lane, in one transaction; then a rebuild is
// asked for. store.ErrConflict (with the current row) when it moved on.
func (s *Service) reroute(ctx context.Context, uuid string, from api.QueryStatus, worker string, fb fallback) (store.Query, error) {
	now := s.now()
	var q store.Query
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		c, err := tx.QueryGet(ctx, uuid)
		if err != nil {
			return err
		}
		if c.Status != from || c.WorkerID != worker || c.Target != TargetPreAgg {
			q = c // cancelled, re-queued to another worker, or rerouted already
			return store.ErrConflict
		}
		upd := fb.update()
		none := ""
		upd.WorkerID, upd.PublishedAt = &none, &now
		if _, err := tx.QueryTransition(ctx, uuid, []api.QueryStatus{from}, api.QueryQueued, upd, now); err != nil {
			return err
		}
		if q, err = tx.QueryMarkRepublished(ctx, uuid, now); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, q, republishID(q), now)
	})
	if err != nil {
		return q, err
	}
	s.wake()
	s.objectLost(ctx, fb)
	return q, nil
}

// failHeld ends a query held by worker in status from with an error.
func (s *Service) failHeld(ctx context.Context, uuid string, from api.QueryStatus, worker, msg string) (store.Query, error) {
	now := s.now()
	var q store.Query
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		c, err := tx.QueryGet(ctx, uuid)
		if err != nil {
			return err
		}
		if c.Status != from || c.WorkerID != worker {
			q = c
			return store.ErrConflict
		}
		q, err = tx.QueryTransition(ctx, uuid, []api.QueryStatus{from}, api.QueryError, store.QueryUpdate{Error: &msg, EndedAt: &now}, now)
		return err
	})
	if err == nil {
		mFinished.WithLabelValues(string(api.QueryError)).Inc()
	}
	return q, err
}

// PutModelsDoc parses a models document ({models: [...]}, YAML or JSON;
// the API's body) and stores its models. A bad document is ErrInvalidModel
// with every problem as request:line:col.
func (s *Service) PutModelsDoc(ctx context.Context, project string, doc []byte) ([]string, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(doc))) == 0 {
		return nil, errorf(ErrInvalidModel, "the body is empty; send a YAML or JSON document {models: [...]}")
	}
	models, err := semantic.ParseModelsDoc("request", doc)
	if err != nil {
		return nil, errorf(ErrInvalidModel, "%v", err)
	}
	if len(models) == 0 {
		return nil, errorf(ErrInvalidModel, "the document declares no models; send {models: [...]}")
	}
	names, _, err := s.putModels(ctx, p, models, SourceAPI, false)
	return names, err
}
