package builds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
)

// The worker protocol: a pre-aggregate worker (or this server's in-process
// builder) claims a queued build, heartbeats while it builds, and reports
// the objects it wrote, or its failure.

// Get returns a build by id.
func (s *Service) Get(ctx context.Context, uuid string) (store.PreAggBuild, error) {
	b, err := store.ReadValue(ctx, s.st, func(q store.Querier) (store.PreAggBuild, error) { return q.BuildGet(ctx, uuid) })
	if errors.Is(err, store.ErrNotFound) {
		return b, errorf(ErrBuildNotFound, "build %s does not exist", uuid)
	}
	return b, err
}

// dialect is the SQL dialect of a project's warehouse.
func dialect(warehouseType string) (semantic.Dialect, error) {
	switch warehouseType {
	case "postgres":
		return semantic.Postgres, nil
	case "duckdb":
		return semantic.DuckDB, nil
	}
	return "", fmt.Errorf("pre-aggregates are not supported on %q warehouses (postgres and duckdb are)", warehouseType)
}

// Claim moves a queued build to building for worker and returns what to
// compute. ErrNotClaimable when it is no longer queued, or when its
// definition changed (or was removed) since it was queued: it is then
// superseded without running, and the scheduler queues one for the new
// definition.
//
// token is the claiming worker's token id (auth.ClaimTokenID; 0 without
// one): while it is not 0 only that token may heartbeat, complete or fail
// the build.
func (s *Service) Claim(ctx context.Context, uuid, worker string, token int64) (api.ClaimedBuild, error) {
	b, err := s.Get(ctx, uuid)
	if err != nil {
		return api.ClaimedBuild{}, err
	}
	if b.Status != api.BuildQueued {
		return api.ClaimedBuild{}, errorf(ErrNotClaimable, "build %s is %s, not queued", uuid, b.Status)
	}
	p, err := s.projectByID(ctx, b.ProjectID)
	if err != nil {
		return api.ClaimedBuild{}, err
	}
	t, err := s.resolve(ctx, p, b.Model, b.PreAggregate)
	if notDeclared(err) || (err == nil && t.hash != b.DefHash) {
		why := "the pre-aggregate's definition changed before the build ran"
		if err != nil {
			why = "the pre-aggregate is no longer declared: " + err.Error()
		}
		s.end(ctx, uuid, []api.BuildStatus{api.BuildQueued}, api.BuildSuperseded, why)
		return api.ClaimedBuild{}, errorf(ErrNotClaimable, "build %s was not run: %s", uuid, why)
	}
	if err != nil {
		return api.ClaimedBuild{}, err
	}
	conn, err := s.projects.Connection(p)
	if err != nil {
		// Not transient (no or another MILLRACE_SECRET_KEY): fail it
		// visibly rather than re-notify it forever.
		s.end(ctx, uuid, []api.BuildStatus{api.BuildQueued}, api.BuildFailed, "the project's warehouse connection: "+err.Error())
		return api.ClaimedBuild{}, errorf(ErrNotClaimable, "build %s failed: the project's warehouse connection: %v", uuid, err)
	}
	d, err := dialect(p.WarehouseType)
	if err != nil {
		s.end(ctx, uuid, []api.BuildStatus{api.BuildQueued}, api.BuildFailed, err.Error())
		return api.ClaimedBuild{}, errorf(ErrNotClaimable, "build %s failed: %v", uuid, err)
	}
	from, keep, err := s.window(ctx, t, b)
	if err != nil {
		return api.ClaimedBuild{}, err
	}
	plan, err := preagg.Plan(t.model, t.preagg, d, from)
	if err != nil {
		s.end(ctx, uuid, []api.BuildStatus{api.BuildQueued}, api.BuildFailed, "planning the build: "+err.Error())
		return api.ClaimedBuild{}, errorf(ErrNotClaimable, "build %s failed: planning it: %v", uuid, err)
	}
	maxRows := int64(t.preagg.MaxRows)
	if maxRows <= 0 {
		maxRows = s.cfg.MaxRows
	}
	out := api.ClaimedBuild{BuildUUID: uuid, Project: p.Name, Model: b.Model, PreAggregate: b.PreAggregate,
		Warehouse: api.WarehouseConn{Type: conn.Type, URL: conn.URL}, Plan: plan,
		Keep: keep, MaxRows: maxRows, ObjectPrefix: ObjectPrefix(p.Name, b.Model, b.PreAggregate, uuid), KeySQL: t.preagg.Refresh.KeySQL}
	now := s.now()
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		b, err = tx.BuildTransition(ctx, uuid, []api.BuildStatus{api.BuildQueued}, api.BuildBuilding,
			store.BuildUpdate{WorkerID: &worker, ClaimTokenID: &token, StartedAt: &now, PublishedAt: &now}, now)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return api.ClaimedBuild{}, errorf(ErrNotClaimable, "build %s is %s, not queued", uuid, b.Status)
	}
	if err != nil {
		return api.ClaimedBuild{}, err
	}
	return out, nil
}

// ObjectPrefix is where a build's objects are stored:
// <project>/<model>/<preagg>/<build_uuid>.
func ObjectPrefix(project, model, preAgg, uuid string) string {
	return project + "/" + model + "/" + preAgg + "/" + uuid
}

// window returns, for a build that recomputes only some partitions, where
// its plan starts and which partitions of the active build it keeps. A
// window build of a pre-aggregate whose active build is missing or of
// another definition recomputes everything instead.
func (s *Service) window(ctx context.Context, t target, b store.PreAggBuild) (*time.Time, []api.PartitionObject, error) {
	var keys []string
	if len(b.Rebuild) > 0 && string(b.Rebuild) != "null" {
		if err := json.Unmarshal(b.Rebuild, &keys); err != nil {
			return nil, nil, fmt.Errorf("build %s: rebuild keys unreadable: %w", b.BuildUUID, err)
		}
	}
	if len(keys) == 0 || t.preagg.Refresh.PartitionBy == "" {
		return nil, nil, nil
	}
	active, err := store.ReadValue(ctx, s.st, func(q store.Querier) (*store.PreAggBuild, error) { return activeOf(ctx, q, t) })
	if err != nil {
		return nil, nil, err
	}
	if active == nil || active.DefHash != b.DefHash {
		s.log.Warn("a window build has no active build of its definition to keep partitions from; rebuilding everything", "build", b.BuildUUID)
		return nil, nil, nil
	}
	from, err := time.Parse(preagg.PartitionKeyLayout, slices.Min(keys))
	if err != nil {
		return nil, nil, fmt.Errorf("build %s: rebuild keys %v: %w", b.BuildUUID, keys, err)
	}
	var parts []api.PartitionObject
	if len(active.Partitions) > 0 {
		if err := json.Unmarshal(active.Partitions, &parts); err != nil {
			return nil, nil, fmt.Errorf("active build %s: partitions unreadable: %w", active.BuildUUID, err)
		}
	}
	keep, ok := preagg.Keep(parts, from)
	if !ok {
		s.log.Warn("the active build is not split by partition; rebuilding everything", "build", b.BuildUUID, "active", active.BuildUUID)
		return nil, nil, nil
	}
	return &from, keep, nil
}

// holder loads a build inside tx and checks that worker holds it, with the
// token that claimed it when the claim recorded one.
func holder(ctx context.Context, tx store.Tx, uuid, worker string, token int64) (store.PreAggBuild, error) {
	cur, err := tx.BuildGet(ctx, uuid)
	if errors.Is(err, store.ErrNotFound) {
		return cur, errorf(ErrBuildNotFound, "build %s does not exist", uuid)
	}
	if err != nil {
		return cur, err
	}
	if cur.Status == api.BuildBuilding && cur.WorkerID == worker && cur.ClaimTokenID != 0 && cur.ClaimTokenID != token {
		return cur, errorf(ErrClaimNotYours, "build %s (worker %q) was claimed with another worker token; only the token that claimed it may heartbeat, complete or fail it", uuid, worker)
	}
	if cur.Status != api.BuildBuilding || cur.WorkerID != worker {
		return cur, errorf(ErrNotHolder, "build %s is %s (worker %q), not building for worker %q: stop", uuid, cur.Status, cur.WorkerID, worker)
	}
	return cur, nil
}

// Heartbeat records that worker still builds uuid. ErrNotHolder when it no
// longer does (re-queued after a stale heartbeat, or ended): stop.
func (s *Service) Heartbeat(ctx context.Context, uuid, worker string, token int64) (store.PreAggBuild, error) {
	now := s.now()
	var b store.PreAggBuild
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		if b, err = holder(ctx, tx, uuid, worker, token); err != nil {
			return err
		}
		b, err = tx.BuildTransition(ctx, uuid, []api.BuildStatus{api.BuildBuilding}, api.BuildBuilding, store.BuildUpdate{PublishedAt: &now}, now)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return b, errorf(ErrNotHolder, "build %s is %s: stop", uuid, b.Status)
	}
	return b, err
}

// Fail records a build's failure. The previous active build, if any, keeps
// serving; the error shows in the pre-aggregate's status.
func (s *Service) Fail(ctx context.Context, uuid, worker string, token int64, msg string) (store.PreAggBuild, error) {
	if msg == "" {
		msg = "the build failed (the worker gave no reason)"
	}
	now := s.now()
	var b store.PreAggBuild
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		if b, err = holder(ctx, tx, uuid, worker, token); err != nil {
			return err
		}
		b, err = tx.BuildTransition(ctx, uuid, []api.BuildStatus{api.BuildBuilding}, api.BuildFailed, store.BuildUpdate{Error: &msg, EndedAt: &now}, now)
		return err
	})
	if errors.Is(err, store.ErrConflict) {
		return b, errorf(ErrNotHolder, "build %s is %s: its failure was not recorded", uuid, b.Status)
	}
	if err == nil {
		mFinished.WithLabelValues(string(api.BuildFailed)).Inc()
		s.log.Warn("pre-aggregate build failed; the previous active build keeps serving", "build", uuid, "model", b.Model, "pre_aggregate", b.PreAggregate, "err", msg)
	}
	return b, err
}

// Complete records a finished build and, when it is good, promotes it:
// atomically it becomes the active build and the previous one superseded,
// so a reader always finds exactly one active build. It is not promoted,
// and the previous build keeps serving, when
//   - its definition is no longer the current one (superseded: a build of
//     the current definition follows);
//   - it is empty while the active build of the same definition has rows
//     (failed: "empty build"), as a half-loaded warehouse table would be;
//   - a newer build is already active (a late older build; superseded).
func (s *Service) Complete(ctx context.Context, uuid, worker string, token int64, c api.BuildComplete) (store.PreAggBuild, error) {
	var rows, size int64
	for i, o := range c.Partitions {
		if o.Object == "" || o.Rows < 0 || o.Bytes < 0 {
			return store.PreAggBuild{}, errorf(ErrInvalid, "partitions[%d]: object is required and rows, bytes must be >= 0", i)
		}
		rows += o.Rows
		size += o.Bytes
	}
	if c.Partitions == nil {
		c.Partitions = []api.PartitionObject{}
	}
	parts, _ := json.Marshal(c.Partitions)
	cur, err := s.Get(ctx, uuid)
	if err != nil {
		return cur, err
	}
	stale := ""
	if p, err := s.projectByID(ctx, cur.ProjectID); err != nil {
		return cur, err
	} else if t, err := s.resolve(ctx, p, cur.Model, cur.PreAggregate); notDeclared(err) {
		stale = "the pre-aggregate is no longer declared"
	} else if err != nil {
		return cur, err
	} else if t.hash != cur.DefHash {
		stale = "the pre-aggregate's definition changed while it built; a build of the new definition follows"
	}
	now := s.now()
	upd := store.BuildUpdate{Partitions: parts, Rows: &rows, Bytes: &size, DataAsOf: c.DataAsOf, EndedAt: &now}
	if c.KeyValue != "" {
		upd.KeyValue = &c.KeyValue
	}
	var b store.PreAggBuild
	err = s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		var err error
		if b, err = holder(ctx, tx, uuid, worker, token); err != nil {
			return err
		}
		if stale != "" {
			upd.Error = &stale
			b, err = tx.BuildTransition(ctx, uuid, []api.BuildStatus{api.BuildBuilding}, api.BuildSuperseded, upd, now)
			return err
		}
		if rows == 0 {
			active, err := tx.BuildsActive(ctx, b.ProjectID)
			if err != nil {
				return err
			}
			for _, a := range active {
				if a.Model == b.Model && a.PreAggregate == b.PreAggregate && a.DefHash == b.DefHash && a.Rows > 0 {
					msg := fmt.Sprintf("empty build: 0 rows, while the active build %s has %d; it was not promoted and the active build keeps serving", a.BuildUUID, a.Rows)
					upd.Error = &msg
					b, err = tx.BuildTransition(ctx, uuid, []api.BuildStatus{api.BuildBuilding}, api.BuildFailed, upd, now)
					return err
				}
			}
		}
		b, err = tx.BuildPromote(ctx, uuid, upd, now)
		if errors.Is(err, store.ErrConflict) {
			// A newer build is active: this one was recorded superseded.
			b, err = tx.BuildGet(ctx, uuid)
		}
		return err
	})
	if err != nil {
		return b, err
	}
	mFinished.WithLabelValues(string(b.Status)).Inc()
	switch b.Status {
	case api.BuildActive:
		s.log.Info("pre-aggregate build promoted", "build", uuid, "model", b.Model, "pre_aggregate", b.PreAggregate, "rows", rows, "bytes", size)
	default:
		s.log.Warn("pre-aggregate build finished but was not promoted; the previous active build keeps serving", "build", uuid,
			"model", b.Model, "pre_aggregate", b.PreAggregate, "status", b.Status, "why", b.Error)
	}
	return b, nil
}

// end moves a build to a final status with a message, if it is still in
// one of from; losing the race is not an error.
func (s *Service) end(ctx context.Context, uuid string, from []api.BuildStatus, to api.BuildStatus, msg string) bool {
	now := s.now()
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.BuildTransition(ctx, uuid, from, to, store.BuildUpdate{Error: &msg, EndedAt: &now}, now)
		return err
	})
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			s.log.Error("recording a build outcome failed", "build", uuid, "to", to, "err", err)
		}
		return false
	}
	mFinished.WithLabelValues(string(to)).Inc()
	return true
}
