package pgdriver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// The metrics layer: semantic models, pre-aggregate builds and their refresh
// state (store.PreAggQuerier and store.PreAggTx).

var (
	_ store.PreAggQuerier = querier{}
	_ store.PreAggTx      = (*tx)(nil)
)

// lockClassPreAgg serialises BuildPromote per pre-aggregate (first key of
// the two-int advisory lock; the second hashes schema, project, model and
// name).
const lockClassPreAgg int32 = 0x70726167 // "prag"

const (
	modelCols = "project_id, name, definition, hash, source, updated_at"
	buildCols = "build_uuid, project_id, model, pre_aggregate, def_hash, status, trigger_reason, partitions, rebuild, " +
		"row_count, byte_count, key_value, data_as_of, error, worker_id, publishes, published_at, created_at, " +
		"started_at, ended_at, updated_at, claim_token_id"
	stateCols = "project_id, model, pre_aggregate, version, next_cron_at, key_value, key_checked_at, updated_at"
	// buildOrder is newest first; the uuid breaks ties within a microsecond.
	buildOrder = "created_at DESC, build_uuid DESC"
)

func scanModel(row pgx.Row) (store.SemanticModel, error) {
	var (
		m   store.SemanticModel
		def []byte
	)
	err := row.Scan(&m.ProjectID, &m.Name, &def, &m.Hash, &m.Source, &m.UpdatedAt)
	m.Definition, m.UpdatedAt = def, m.UpdatedAt.UTC()
	return m, err
}

func scanBuild(row pgx.Row) (store.PreAggBuild, error) {
	var (
		b                   store.PreAggBuild
		partitions, rebuild []byte
	)
	err := row.Scan(&b.BuildUUID, &b.ProjectID, &b.Model, &b.PreAggregate, &b.DefHash, &b.Status, &b.Trigger,
		&partitions, &rebuild, &b.Rows, &b.Bytes, &b.KeyValue, &b.DataAsOf, &b.Error, &b.WorkerID, &b.Publishes,
		&b.PublishedAt, &b.CreatedAt, &b.StartedAt, &b.EndedAt, &b.UpdatedAt, &b.ClaimTokenID)
	b.Partitions, b.Rebuild = partitions, rebuild
	b.DataAsOf, b.PublishedAt, b.StartedAt, b.EndedAt = utcPtr(b.DataAsOf), utcPtr(b.PublishedAt), utcPtr(b.StartedAt), utcPtr(b.EndedAt)
	b.CreatedAt, b.UpdatedAt = b.CreatedAt.UTC(), b.UpdatedAt.UTC()
	return b, err
}

func scanState(row pgx.Row) (store.PreAggState, error) {
	var s store.PreAggState
	err := row.Scan(&s.ProjectID, &s.Model, &s.PreAggregate, &s.Version, &s.NextCronAt, &s.KeyValue, &s.KeyCheckedAt, &s.UpdatedAt)
	s.NextCronAt, s.KeyCheckedAt, s.UpdatedAt = utcPtr(s.NextCronAt), utcPtr(s.KeyCheckedAt), s.UpdatedAt.UTC()
	return s, err
}

func (q querier) ModelGet(ctx context.Context, projectID int64, name string) (store.SemanticModel, error) {
	m, err := scanModel(q.db.QueryRow(ctx, "SELECT "+modelCols+" FROM semantic_models WHERE project_id = $1 AND name = $2", projectID, name))
	if err != nil {
		return store.SemanticModel{}, notFound(err, fmt.Sprintf("model %q of project %d", name, projectID))
	}
	return m, nil
}

func (q querier) ModelList(ctx context.Context, projectID int64) ([]store.SemanticModel, error) {
	rows, err := q.db.Query(ctx, "SELECT "+modelCols+` FROM semantic_models WHERE project_id = $1 ORDER BY name COLLATE "C"`, projectID)
	list, err := collect(rows, err, scanModel)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list models of project %d: %w", projectID, err)
	}
	return list, nil
}

func (q querier) BuildGet(ctx context.Context, uuid string) (store.BuildRow, error) {
	b, err := scanBuild(q.db.QueryRow(ctx, "SELECT "+buildCols+" FROM preagg_builds WHERE build_uuid = $1", uuid))
	if err != nil {
		return store.BuildRow{}, notFound(err, fmt.Sprintf("build %s", uuid))
	}
	return b, nil
}

func (q querier) BuildList(ctx context.Context, projectID int64, model, preAgg string, offset, limit int) ([]store.PreAggBuild, error) {
	rows, err := q.db.Query(ctx, "SELECT "+buildCols+` FROM preagg_builds
		WHERE project_id = $1 AND ($2 = '' OR model = $2) AND ($3 = '' OR pre_aggregate = $3)
		ORDER BY `+buildOrder+` OFFSET $4 LIMIT $5`, projectID, model, preAgg, max(offset, 0), limitArg(limit))
	list, err := collect(rows, err, scanBuild)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list builds of project %d: %w", projectID, err)
	}
	return list, nil
}

// BuildsActive lists by model, then pre-aggregate.
func (q querier) BuildsActive(ctx context.Context, projectID int64) ([]store.PreAggBuild, error) {
	rows, err := q.db.Query(ctx, "SELECT "+buildCols+` FROM preagg_builds
		WHERE project_id = $1 AND status = 'active' ORDER BY model COLLATE "C", pre_aggregate COLLATE "C"`, projectID)
	list, err := collect(rows, err, scanBuild)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list active builds of project %d: %w", projectID, err)
	}
	return list, nil
}

func (q querier) BuildsQueuedBefore(ctx context.Context, before time.Time, limit int) ([]store.PreAggBuild, error) {
	return q.buildsInBefore(ctx, api.BuildQueued, before, limit)
}

func (q querier) BuildsBuildingBefore(ctx context.Context, before time.Time, limit int) ([]store.PreAggBuild, error) {
	return q.buildsInBefore(ctx, api.BuildBuilding, before, limit)
}

// buildsInBefore spells the status out in the SQL so the partial indexes
// apply.
func (q querier) buildsInBefore(ctx context.Context, status api.BuildStatus, before time.Time, limit int) ([]store.PreAggBuild, error) {
	rows, err := q.db.Query(ctx, "SELECT "+buildCols+` FROM preagg_builds
		WHERE status = '`+string(status)+`' AND published_at <= $1
		ORDER BY published_at, build_uuid LIMIT $2`, ts(before), limitArg(limit))
	list, err := collect(rows, err, scanBuild)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list %s builds: %w", status, err)
	}
	return list, nil
}

func (q querier) BuildPending(ctx context.Context, projectID int64, model, preAgg string) (bool, error) {
	var pending bool
	err := q.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM preagg_builds
		WHERE project_id = $1 AND model = $2 AND pre_aggregate = $3 AND status IN ('queued', 'building'))`,
		projectID, model, preAgg).Scan(&pending)
	if err != nil {
		return false, fmt.Errorf("pgdriver: pending build of %d/%s/%s: %w", projectID, model, preAgg, err)
	}
	return pending, nil
}

func (q querier) PreAggStateGet(ctx context.Context, projectID int64, model, preAgg string) (store.PreAggState, error) {
	s, err := scanState(q.db.QueryRow(ctx, "SELECT "+stateCols+` FROM preagg_state
		WHERE project_id = $1 AND model = $2 AND pre_aggregate = $3`, projectID, model, preAgg))
	if err != nil {
		return store.PreAggState{}, notFound(err, fmt.Sprintf("refresh state of %d/%s/%s", projectID, model, preAgg))
	}
	return s, nil
}

// ModelPut sets UpdatedAt to m.UpdatedAt, or now when zero.
func (t *tx) ModelPut(ctx context.Context, m store.SemanticModel) error {
	_, err := t.tx.Exec(ctx, "INSERT INTO semantic_models ("+modelCols+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (project_id, name) DO UPDATE SET definition = excluded.definition, hash = excluded.hash,
			source = excluded.source, updated_at = excluded.updated_at`,
		m.ProjectID, m.Name, jsonArg(m.Definition), m.Hash, m.Source, tsOrNow(m.UpdatedAt))
	if err != nil {
		return fmt.Errorf("pgdriver: put model %q of project %d: %w", m.Name, m.ProjectID, err)
	}
	return nil
}

func (t *tx) ModelDelete(ctx context.Context, projectID int64, name string) error {
	tag, err := t.tx.Exec(ctx, "DELETE FROM semantic_models WHERE project_id = $1 AND name = $2", projectID, name)
	if err != nil {
		return fmt.Errorf("pgdriver: delete model %q of project %d: %w", name, projectID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete model %q of project %d: %w", name, projectID, store.ErrNotFound)
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
		return fmt.Errorf("pgdriver: insert build %s: unknown status %q", b.BuildUUID, status)
	}
	created := tsOrNow(b.CreatedAt)
	updated := created
	if !b.UpdatedAt.IsZero() {
		updated = ts(b.UpdatedAt)
	}
	_, err := t.tx.Exec(ctx, "INSERT INTO preagg_builds ("+buildCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
		b.BuildUUID, b.ProjectID, b.Model, b.PreAggregate, b.DefHash, status, b.Trigger, jsonArg(b.Partitions),
		jsonArg(b.Rebuild), b.Rows, b.Bytes, b.KeyValue, tsPtrArg(b.DataAsOf), b.Error, b.WorkerID, b.Publishes,
		tsPtrArg(b.PublishedAt), created, tsPtrArg(b.StartedAt), tsPtrArg(b.EndedAt), updated, b.ClaimTokenID)
	if err != nil {
		return insertErr(err, fmt.Sprintf("build %s of %d/%s/%s", b.BuildUUID, b.ProjectID, b.Model, b.PreAggregate))
	}
	return nil
}

// buildSet applies a store.BuildUpdate: each field is NULL when unset and
// leaves its column alone; Partitions is applied when non-nil (an empty
// document clears it). Its parameters are $3 to $13.
const buildSet = `partitions   = CASE WHEN $3::boolean THEN $4::json ELSE partitions END,
			row_count    = COALESCE($5::bigint, row_count),
			byte_count   = COALESCE($6::bigint, byte_count),
			key_value    = COALESCE($7::text, key_value),
			data_as_of   = COALESCE($8::timestamptz, data_as_of),
			error        = COALESCE($9::text, error),
			worker_id    = COALESCE($10::text, worker_id),
			published_at = COALESCE($11::timestamptz, published_at),
			started_at   = COALESCE($12::timestamptz, started_at),
			ended_at     = COALESCE($13::timestamptz, ended_at)`

// buildSetArgs are buildSet's parameters $3 to $13, preceded by first ($1, $2).
func buildSetArgs(upd store.BuildUpdate, first ...any) []any {
	return append(first, upd.Partitions != nil, jsonArg(upd.Partitions), upd.Rows, upd.Bytes, upd.KeyValue,
		tsPtrArg(upd.DataAsOf), upd.Error, upd.WorkerID, tsPtrArg(upd.PublishedAt), tsPtrArg(upd.StartedAt),
		tsPtrArg(upd.EndedAt))
}

// BuildTransition is one conditional UPDATE: under READ COMMITTED a writer
// that waited on the row lock re-checks the status against the committed
// row, so of several concurrent transitions from the same status exactly
// one applies.
func (t *tx) BuildTransition(ctx context.Context, uuid string, from []api.BuildStatus, to api.BuildStatus, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	what := fmt.Sprintf("move build %s from %v to %s", uuid, from, to)
	if err := store.CheckBuildTransition(from, to); err != nil {
		return store.PreAggBuild{}, fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	args := buildSetArgs(upd, uuid, from)
	got, err := scanBuild(t.tx.QueryRow(ctx, `UPDATE preagg_builds SET `+buildSet+`,
			status = $14, updated_at = $15, claim_token_id = COALESCE($16::bigint, claim_token_id)
		WHERE build_uuid = $1 AND status = ANY($2)
		RETURNING `+buildCols, append(args, to, tsOrNow(now), upd.ClaimTokenID)...))
	if err == nil {
		return got, nil
	}
	return t.buildConflict(ctx, err, uuid, what)
}

// buildConflict explains a conditional build UPDATE that matched nothing
// (failure path only): ErrNotFound, or ErrConflict with the current row.
func (t *tx) buildConflict(ctx context.Context, err error, uuid, what string) (store.PreAggBuild, error) {
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.PreAggBuild{}, fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	cur, err := t.BuildGet(ctx, uuid)
	if err != nil {
		return store.PreAggBuild{}, fmt.Errorf("%s: %w", what, err)
	}
	return cur, fmt.Errorf("%s: it is %s: %w", what, cur.Status, store.ErrConflict)
}

// BuildPromote takes a transaction-scoped advisory lock on the
// pre-aggregate first: two builds finishing at once then decide one after
// the other, each statement after the lock seeing what the other committed
// (READ COMMITTED takes a fresh snapshot per statement). Without it both
// could find no active build and the second would trip the unique index
// instead of being compared with the first.
func (t *tx) BuildPromote(ctx context.Context, uuid string, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	what := fmt.Sprintf("promote build %s", uuid)
	now = tsOrNow(now)
	var unlocked bool // pg_advisory_xact_lock returns void; the row is what matters
	err := t.tx.QueryRow(ctx, `SELECT pg_advisory_xact_lock($2, hashtext(concat_ws('/', current_schema(),
			project_id::text, model, pre_aggregate))) IS NULL
		FROM preagg_builds WHERE build_uuid = $1`, uuid, lockClassPreAgg).Scan(&unlocked)
	if err != nil {
		return store.PreAggBuild{}, notFound(err, what)
	}
	// The build, locked against a concurrent transition (the reaper's
	// re-queue), and the pre-aggregate's active build, as committed now.
	var (
		activeUUID    *string
		activeCreated *time.Time
	)
	me, err := scanBuild(withActive{t.tx.QueryRow(ctx, `SELECT `+qualified("me", buildCols)+`, act.build_uuid, act.created_at
		FROM preagg_builds me
		LEFT JOIN preagg_builds act ON act.project_id = me.project_id AND act.model = me.model
			AND act.pre_aggregate = me.pre_aggregate AND act.status = 'active'
		WHERE me.build_uuid = $1
		FOR UPDATE OF me`, uuid), &activeUUID, &activeCreated})
	if err != nil {
		return store.PreAggBuild{}, notFound(err, what)
	}
	if me.Status != api.BuildBuilding {
		return me, fmt.Errorf("%s: it is %s, not building: %w", what, me.Status, store.ErrConflict)
	}
	if activeUUID != nil && newer(activeCreated.UTC(), *activeUUID, me.CreatedAt, me.BuildUUID) {
		// A newer build is already serving: this late one never replaces it.
		got, err := t.buildSetStatus(ctx, uuid, api.BuildSuperseded, upd, now)
		if err != nil {
			return store.PreAggBuild{}, fmt.Errorf("pgdriver: %s: supersede it: %w", what, err)
		}
		return got, fmt.Errorf("%s: build %s, created after it, is active; it is superseded: %w", what, *activeUUID, store.ErrConflict)
	}
	if activeUUID != nil {
		if _, err := t.tx.Exec(ctx, `UPDATE preagg_builds SET status = 'superseded', updated_at = $2
			WHERE build_uuid = $1 AND status = 'active'`, *activeUUID, now); err != nil {
			return store.PreAggBuild{}, fmt.Errorf("pgdriver: %s: supersede build %s: %w", what, *activeUUID, err)
		}
	}
	got, err := t.buildSetStatus(ctx, uuid, api.BuildActive, upd, now)
	if err != nil {
		return store.PreAggBuild{}, insertErr(err, what)
	}
	return got, nil
}

// buildSetStatus applies upd and status to a build this transaction has
// already checked.
func (t *tx) buildSetStatus(ctx context.Context, uuid string, status api.BuildStatus, upd store.BuildUpdate, now time.Time) (store.PreAggBuild, error) {
	args := buildSetArgs(upd, uuid, status)
	return scanBuild(t.tx.QueryRow(ctx, `UPDATE preagg_builds SET `+buildSet+`, status = $2, updated_at = $14,
			claim_token_id = COALESCE($15::bigint, claim_token_id)
		WHERE build_uuid = $1 RETURNING `+buildCols, append(args, now, upd.ClaimTokenID)...))
}

// newer reports whether build (created, uuid) came after (otherCreated,
// otherUUID).
func newer(created time.Time, uuid string, otherCreated time.Time, otherUUID string) bool {
	if !created.Equal(otherCreated) {
		return created.After(otherCreated)
	}
	return uuid > otherUUID
}

// withActive scans the active build's uuid and creation time after
// buildCols.
type withActive struct {
	row     pgx.Row
	uuid    **string
	created **time.Time
}

func (w withActive) Scan(dest ...any) error { return w.row.Scan(append(dest, w.uuid, w.created)...) }

// qualified prefixes each column of a comma-separated list with alias.
func qualified(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

func (t *tx) BuildMarkRepublished(ctx context.Context, uuid string, now time.Time) (store.PreAggBuild, error) {
	got, err := scanBuild(t.tx.QueryRow(ctx, `UPDATE preagg_builds SET publishes = publishes + 1, published_at = $2
		WHERE build_uuid = $1 RETURNING `+buildCols, uuid, tsOrNow(now)))
	if err != nil {
		return store.PreAggBuild{}, notFound(err, fmt.Sprintf("mark build %s republished", uuid))
	}
	return got, nil
}

// PreAggStateCAS: the insert of a new row and the update of an existing one
// are each a single statement whose conflict check the database makes
// atomic (ON CONFLICT waits for a concurrent inserter; the UPDATE
// re-checks version after waiting on the row lock). UpdatedAt is
// st.UpdatedAt, or now when zero.
func (t *tx) PreAggStateCAS(ctx context.Context, st store.PreAggState, prevVersion int64) error {
	what := fmt.Sprintf("write refresh state of %d/%s/%s at version %d", st.ProjectID, st.Model, st.PreAggregate, prevVersion)
	args := []any{st.ProjectID, st.Model, st.PreAggregate, prevVersion + 1, tsPtrArg(st.NextCronAt), st.KeyValue,
		tsPtrArg(st.KeyCheckedAt), tsOrNow(st.UpdatedAt)}
	var sql string
	if prevVersion == 0 {
		sql = "INSERT INTO preagg_state (" + stateCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (project_id, model, pre_aggregate) DO NOTHING`
	} else {
		sql = `UPDATE preagg_state SET version = $4, next_cron_at = $5, key_value = $6, key_checked_at = $7, updated_at = $8
			WHERE project_id = $1 AND model = $2 AND pre_aggregate = $3 AND version = $4 - 1`
	}
	tag, err := t.tx.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: another writer changed it first: %w", what, store.ErrConflict)
	}
	return nil
}
