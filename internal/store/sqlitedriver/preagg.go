package sqlitedriver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// The metrics layer: semantic models, pre-aggregate builds and their refresh
// state (store.PreAggQuerier and store.PreAggTx). Every write transaction
// holds the database write lock from BEGIN IMMEDIATE, so a read followed by
// a write in one transaction is already atomic.

var (
	_ store.PreAggQuerier = (*queries)(nil)
	_ store.PreAggTx      = (*tx)(nil)
)

const (
	modelCols = `project_id, name, definition, hash, source, updated_at`
	buildCols = `build_uuid, project_id, model, pre_aggregate, def_hash, status, trigger_reason, partitions, rebuild,
	row_count, byte_count, key_value, data_as_of, error, worker_id, publishes, published_at, created_at,
	started_at, ended_at, updated_at, claim_token_id`
	stateCols = `project_id, model, pre_aggregate, version, next_cron_at, key_value, key_checked_at, updated_at`
	// buildOrder is newest first; the uuid breaks ties within a microsecond.
	buildOrder = `created_at DESC, build_uuid DESC`
)

func scanModel(s scanner) (store.SemanticModel, error) {
	var m store.SemanticModel
	var def []byte
	var updated int64
	if err := s.Scan(&m.ProjectID, &m.Name, &def, &m.Hash, &m.Source, &updated); err != nil {
		return store.SemanticModel{}, err
	}
	m.Definition, m.UpdatedAt = fromJSON(def), fromMicros(updated)
	return m, nil
}

func scanBuild(s scanner) (store.PreAggBuild, error) {
	var b store.PreAggBuild
	var partitions, rebuild []byte
	var dataAsOf, published, started, ended sql.NullInt64
	var created, updated int64
	err := s.Scan(&b.BuildUUID, &b.ProjectID, &b.Model, &b.PreAggregate, &b.DefHash, &b.Status, &b.Trigger,
		&partitions, &rebuild, &b.Rows, &b.Bytes, &b.KeyValue, &dataAsOf, &b.Error, &b.WorkerID, &b.Publishes,
		&published, &created, &started, &ended, &updated, &b.ClaimTokenID)
	if err != nil {
		return store.PreAggBuild{}, err
	}
	b.Partitions, b.Rebuild = fromJSON(partitions), fromJSON(rebuild)
	b.DataAsOf, b.PublishedAt = fromNullMicros(dataAsOf), fromNullMicros(published)
	b.StartedAt, b.EndedAt = fromNullMicros(started), fromNullMicros(ended)
	b.CreatedAt, b.UpdatedAt = fromMicros(created), fromMicros(updated)
	return b, nil
}

func scanState(s scanner) (store.PreAggState, error) {
	var st store.PreAggState
	var nextCron, keyChecked sql.NullInt64
	var updated int64
	err := s.Scan(&st.ProjectID, &st.Model, &st.PreAggregate, &st.Version, &nextCron, &st.KeyValue, &keyChecked, &updated)
	if err != nil {
		return store.PreAggState{}, err
	}
	st.NextCronAt, st.KeyCheckedAt, st.UpdatedAt = fromNullMicros(nextCron), fromNullMicros(keyChecked), fromMicros(updated)
	return st, nil
}

func (q *queries) ModelGet(ctx context.Context, projectID int64, name string) (store.SemanticModel, error) {
	m, err := scanModel(q.queryRow(ctx, `SELECT `+modelCols+` FROM semantic_models WHERE project_id = ? AND name = ?`, projectID, name))
	if err != nil {
		return m, notFound(err, "model %q of project %d", name, projectID)
	}
	return m, nil
}

func (q *queries) ModelList(ctx context.Context, projectID int64) ([]store.SemanticModel, error) {
	rows, err := q.query(ctx, `SELECT `+modelCols+` FROM semantic_models WHERE project_id = ? ORDER BY name`, projectID)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list models of project %d: %w", projectID, err)
	}
	return collect(rows, scanModel, "list models")
}

func (q *queries) BuildGet(ctx context.Context, uuid string) (store.BuildRow, error) {
	b, err := scanBuild(q.queryRow(ctx, `SELECT `+buildCols+` FROM preagg_builds WHERE build_uuid = ?`, uuid))
	if err != nil {
		return b, notFound(err, "build %s", uuid)
	}
	return b, nil
}

func (q *queries) BuildList(ctx context.Context, projectID int64, model, preAgg string, offset, limit int) ([]store.PreAggBuild, error) {
	rows, err := q.query(ctx, `SELECT `+buildCols+` FROM preagg_builds
		WHERE project_id = ?1 AND (?2 = '' OR model = ?2) AND (?3 = '' OR pre_aggregate = ?3)
		ORDER BY `+buildOrder+` LIMIT ?4 OFFSET ?5`, projectID, model, preAgg, limitOrAll(limit), max(offset, 0))
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list builds of project %d: %w", projectID, err)
	}
	return collect(rows, scanBuild, "list builds")
}

// BuildsActive lists by model, then pre-aggregate.
func (q *queries) BuildsActive(ctx context.Context, projectID int64) ([]store.PreAggBuild, error) {
	rows, err := q.query(ctx, `SELECT `+buildCols+` FROM preagg_builds
		WHERE project_id = ? AND status = 'active' ORDER BY model, pre_aggregate`, projectID)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list active builds of project %d: %w", projectID, err)
	}
	return collect(rows, scanBuild, "list active builds")
}

func (q *queries) BuildsQueuedBefore(ctx context.Context, before time.Time, limit int) ([]store.PreAggBuild, error) {
	return q.buildsInBefore(ctx, api.BuildQueued, before, limit)
}

func (q *queries) BuildsBuildingBefore(ctx context.Context, before time.Time, limit int) ([]store.PreAggBuild, error) {
	return q.buildsInBefore(ctx, api.BuildBuilding, before, limit)
}

// buildsInBefore spells the status out in the SQL so the partial indexes
// apply.
func (q *queries) buildsInBefore(ctx context.Context, status api.BuildStatus, before time.Time, limit int) ([]store.PreAggBuild, error) {
	rows, err := q.query(ctx, `SELECT `+buildCols+` FROM preagg_builds
		WHERE status = '`+string(status)+`' AND published_at <= ?
		ORDER BY published_at, build_uuid LIMIT ?`, micros(before), limitOrAll(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list %s builds: %w", status, err)
	}
	return collect(rows, scanBuild, "list "+string(status)+" builds")
}

func (q *queries) BuildPending(ctx context.Context, projectID int64, model, preAgg string) (bool, error) {
	var pending bool
	err := q.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM preagg_builds
		WHERE project_id = ? AND model = ? AND pre_aggregate = ? AND status IN ('queued', 'building'))`,
		projectID, model, preAgg).Scan(&pending)
	if err != nil {
		return false, fmt.Errorf("sqlitedriver: pending build of %d/%s/%s: %w", projectID, model, preAgg, err)
	}
	return pending, nil
}

func (q *queries) PreAggStateGet(ctx context.Context, projectID int64, model, preAgg string) (store.PreAggState, error) {
	st, err := scanState(q.queryRow(ctx, `SELECT `+stateCols+` FROM preagg_state
		WHERE project_id = ? AND model = ? AND pre_aggregate = ?`, projectID, model, preAgg))
	if err != nil {
		return st, notFound(err, "refresh state of %d/%s/%s", projectID, model, preAgg)
	}
	return st, nil
}

// ModelPut sets UpdatedAt to m.UpdatedAt, or now when zero.
func (t *tx) ModelPut(ctx context.Context, m store.SemanticModel) error {
	_, err := t.exec(ctx, `INSERT INTO semantic_models (`+modelCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (project_id, name) DO UPDATE SET definition = excluded.definition, hash = excluded.hash,
			source = excluded.source, updated_at = excluded.updated_at`,
		m.ProjectID, m.Name, jsonArg(m.Definition), m.Hash, m.Source, micros(nowIfZero(m.UpdatedAt)))
	if err != nil {
		return fmt.Errorf("sqlitedriver: put model %q of project %d: %w", m.Name, m.ProjectID, err)
	}
	return nil
}

func (t *tx) ModelDelete(ctx context.Context, projectID int64, name string) error {
	res, err := t.exec(ctx, `DELETE FROM semantic_models WHERE project_id = ? AND name = ?`, projectID, name)
	if err != nil {
		return fmt.Errorf("sqlitedriver: delete model %q of project %d: %w", name, projectID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitedriver: delete model %q of project %d: %w", name, projectID, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlitedriver: delete model %q of project %d: %w", name, projectID, store.ErrNotFound)
	}
	return nil
}

// BuildInsert stores b as given; an empty Status means queued, a zero
// CreatedAt now and a zero UpdatedAt CreatedAt. A second active build of
// the same pre-aggregate is ErrConflict, like a duplicate uuid.
func (t *tx) BuildInsert(ctx context.Context, b store.PreAggBuild) error {
	status := b.Status
	if status == "" {
		status = api.BuildQueued
	}
	if !store.ValidBuildStatus(status) {
		return fmt.Errorf("sqlitedriver: insert build %s: unknown status %q", b.BuildUUID, status)
	}
	created := micros(nowIfZero(b.CreatedAt))
	updated := created
	if !b.UpdatedAt.IsZero() {
		updated = micros(b.UpdatedAt)
	}
	_, err := t.exec(ctx, `INSERT INTO preagg_builds (`+buildCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		b.BuildUUID, b.ProjectID, b.Model, b.PreAggregate, b.DefHash, status, b.Trigger, jsonArg(b.Partitions),
		jsonArg(b.Rebuild), b.Rows, b.Bytes, b.KeyValue, microsPtr(b.DataAsOf), b.Error, b.WorkerID, b.Publishes,
		microsPtr(b.PublishedAt), created, microsPtr(b.StartedAt), microsPtr(b.EndedAt), updated, b.ClaimTokenID)
	if err != nil {
		return insertErr(err, "build %s of %d/%s/%s", b.BuildUUID, b.ProjectID, b.Model, b.PreAggregate)
	}
	return nil
}

// buildSet applies a store.BuildUpdate: each field is NULL when unset and
// leaves its column alone; Partitions is applied when non-nil (an empty
// document clears it). Its parameters are ?3 to ?13.
const buildSet = `partitions   = CASE WHEN ?3 THEN ?4 ELSE partitions END,
			row_count    = COALESCE(?5, row_count),
			byte_count   = COALESCE(?6, byte_count),
			key_value    = COALESCE(?7, key_value),
			data_as_of   = COALESCE(?8, data_as_of),
			error        = COALESCE(?9, error),
			worker_id    = COALESCE(?10, worker_id),
			published_at = COALESCE(?11, published_at),
			started_at   = COALESCE(?12, started_at),
			ended_at     = COALESCE(?13, ended_at)`

// buildSetArgs are buildSet's parameters ?3 to ?13, preceded by first (?1, ?2).
func buildSetArgs(upd store.BuildUpdate, first ...any) []any {
	return append(first, upd.Partitions != nil, jsonArg(upd.Partitions), upd.Rows, upd.Bytes, upd.KeyValue,
		microsPtr(upd.DataAsOf), upd.Error, upd.WorkerID, microsPtr(upd.PublishedAt), microsPtr(upd.StartedAt),
		microsPtr(upd.EndedAt))
}

// BuildTransition is one conditional UPDATE under the write lock, so of
// several transitions from the same status exactly one applies.
func (t *tx) BuildTransition(ctx context.Context, uuid string, from []api.BuildStatus, to api.BuildStatus, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	what := fmt.Sprintf("move build %s from %v to %s", uuid, from, to)
	if err := store.CheckBuildTransition(from, to); err != nil {
		return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	fromList, err := json.Marshal(from)
	if err != nil {
		return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	args := buildSetArgs(upd, uuid, string(fromList))
	got, err := scanBuild(t.queryRow(ctx, `UPDATE preagg_builds SET `+buildSet+`,
			status = ?14, updated_at = ?15, claim_token_id = COALESCE(?16, claim_token_id)
		WHERE build_uuid = ?1 AND status IN (SELECT value FROM json_each(?2))
		RETURNING `+buildCols, append(args, to, micros(nowIfZero(now)), upd.ClaimTokenID)...))
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	// Failure path only: report why, with the row as it is now.
	cur, err := t.BuildGet(ctx, uuid)
	if err != nil {
		return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	return cur, fmt.Errorf("sqlitedriver: %s: it is %s: %w", what, cur.Status, store.ErrConflict)
}

// BuildPromote reads the build and the pre-aggregate's active build, then
// writes: the write lock held since BEGIN IMMEDIATE makes that atomic.
func (t *tx) BuildPromote(ctx context.Context, uuid string, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	what := fmt.Sprintf("promote build %s", uuid)
	nowUS := micros(nowIfZero(now))
	me, err := t.BuildGet(ctx, uuid)
	if err != nil {
		return store.PreAggBuild{}, fmt.Errorf("%s: %w", what, err)
	}
	if me.Status != api.BuildBuilding {
		return me, fmt.Errorf("sqlitedriver: %s: it is %s, not building: %w", what, me.Status, store.ErrConflict)
	}
	var activeUUID string
	var activeCreated int64
	err = t.queryRow(ctx, `SELECT build_uuid, created_at FROM preagg_builds
		WHERE project_id = ? AND model = ? AND pre_aggregate = ? AND status = 'active'`,
		me.ProjectID, me.Model, me.PreAggregate).Scan(&activeUUID, &activeCreated)
	hasActive := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: read the active build: %w", what, err)
	}
	if hasActive && newer(activeCreated, activeUUID, micros(me.CreatedAt), me.BuildUUID) {
		// A newer build is already serving: this late one never replaces it.
		got, err := t.buildSetStatus(ctx, uuid, api.BuildSuperseded, upd, nowUS)
		if err != nil {
			return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: supersede it: %w", what, err)
		}
		return got, fmt.Errorf("sqlitedriver: %s: build %s, created after it, is active; it is superseded: %w", what, activeUUID, store.ErrConflict)
	}
	if hasActive {
		if _, err := t.exec(ctx, `UPDATE preagg_builds SET status = 'superseded', updated_at = ?
			WHERE build_uuid = ? AND status = 'active'`, nowUS, activeUUID); err != nil {
			return store.PreAggBuild{}, fmt.Errorf("sqlitedriver: %s: supersede build %s: %w", what, activeUUID, err)
		}
	}
	got, err := t.buildSetStatus(ctx, uuid, api.BuildActive, upd, nowUS)
	if err != nil {
		return store.PreAggBuild{}, insertErr(err, "%s", what)
	}
	return got, nil
}

// buildSetStatus applies upd and status to a build this transaction has
// already checked.
func (t *tx) buildSetStatus(ctx context.Context, uuid string, status api.BuildStatus, upd store.BuildUpdate, nowUS int64) (store.PreAggBuild, error) {
	args := buildSetArgs(upd, uuid, status)
	return scanBuild(t.queryRow(ctx, `UPDATE preagg_builds SET `+buildSet+`, status = ?2, updated_at = ?14,
			claim_token_id = COALESCE(?15, claim_token_id)
		WHERE build_uuid = ?1 RETURNING `+buildCols, append(args, nowUS, upd.ClaimTokenID)...))
}

// newer reports whether build (created, uuid) came after (otherCreated,
// otherUUID); times are unix microseconds.
func newer(created int64, uuid string, otherCreated int64, otherUUID string) bool {
	if created != otherCreated {
		return created > otherCreated
	}
	return uuid > otherUUID
}

func (t *tx) BuildMarkRepublished(ctx context.Context, uuid string, now time.Time) (store.PreAggBuild, error) {
	got, err := scanBuild(t.queryRow(ctx, `UPDATE preagg_builds SET publishes = publishes + 1, published_at = ?
		WHERE build_uuid = ? RETURNING `+buildCols, micros(nowIfZero(now)), uuid))
	if err != nil {
		return got, notFound(err, "mark build %s republished", uuid)
	}
	return got, nil
}

// PreAggStateCAS runs under the write lock: the version check and the write
// cannot interleave with another writer. UpdatedAt is st.UpdatedAt, or now
// when zero.
func (t *tx) PreAggStateCAS(ctx context.Context, st store.PreAggState, prevVersion int64) error {
	what := fmt.Sprintf("write refresh state of %d/%s/%s at version %d", st.ProjectID, st.Model, st.PreAggregate, prevVersion)
	args := []any{st.ProjectID, st.Model, st.PreAggregate, prevVersion + 1, microsPtr(st.NextCronAt), st.KeyValue,
		microsPtr(st.KeyCheckedAt), micros(nowIfZero(st.UpdatedAt))}
	var stmt string
	if prevVersion == 0 {
		stmt = `INSERT INTO preagg_state (` + stateCols + `) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
			ON CONFLICT (project_id, model, pre_aggregate) DO NOTHING`
	} else {
		stmt = `UPDATE preagg_state SET version = ?4, next_cron_at = ?5, key_value = ?6, key_checked_at = ?7, updated_at = ?8
			WHERE project_id = ?1 AND model = ?2 AND pre_aggregate = ?3 AND version = ?4 - 1`
	}
	res, err := t.exec(ctx, stmt, args...)
	if err != nil {
		return fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlitedriver: %s: another writer changed it first: %w", what, store.ErrConflict)
	}
	return nil
}
