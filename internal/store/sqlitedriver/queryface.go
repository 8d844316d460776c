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

// The warehouse-query face: projects and the query history (store.QueryQuerier
// and store.QueryTx).

var (
	_ store.QueryQuerier = (*queries)(nil)
	_ store.QueryTx      = (*tx)(nil)
)

// noLimit is SQLite's LIMIT for "all rows"; a non-positive limit means all.
const noLimit = -1

func limitOrAll(limit int) int {
	if limit <= 0 {
		return noLimit
	}
	return limit
}

const (
	projectCols = `project_id, name, warehouse_type, warehouse, created_at, updated_at`
	queryCols   = `query_uuid, project_id, sql, lane, cache_key, cache_hit, status, error, columns, total_rows,
	result_key, worker_id, publishes, published_at, created_at, started_at, ended_at, expires_at, updated_at,
	kind, metric_query, target, pre_aggregate, build_uuid, claim_token_id`
	// historyOrder is newest first; the uuid breaks ties between queries
	// created in the same microsecond so paging is stable.
	historyOrder = `created_at DESC, query_uuid DESC`
)

func scanProject(s scanner) (store.Project, error) {
	var p store.Project
	var created, updated int64
	if err := s.Scan(&p.ProjectID, &p.Name, &p.WarehouseType, &p.Warehouse, &created, &updated); err != nil {
		return store.Project{}, err
	}
	p.CreatedAt, p.UpdatedAt = fromMicros(created), fromMicros(updated)
	return p, nil
}

func scanQuery(s scanner) (store.Query, error) {
	var q store.Query
	var columns, metricQuery, preAggr []byte
	var published, started, ended, expires sql.NullInt64
	var created, updated int64
	err := s.Scan(&q.QueryUUID, &q.ProjectID, &q.SQL, &q.Lane, &q.CacheKey, &q.CacheHit, &q.Status, &q.Error,
		&columns, &q.TotalRows, &q.ResultKey, &q.WorkerID, &q.Publishes, &published, &created,
		&started, &ended, &expires, &updated,
		&q.Kind, &metricQuery, &q.Target, &preAggr, &q.BuildUUID, &q.ClaimTokenID)
	if err != nil {
		return store.Query{}, err
	}
	q.Columns, q.MetricQuery, q.PreAggregate = fromJSON(columns), fromJSON(metricQuery), fromJSON(preAggr)
	q.PublishedAt, q.StartedAt = fromNullMicros(published), fromNullMicros(started)
	q.EndedAt, q.ExpiresAt = fromNullMicros(ended), fromNullMicros(expires)
	q.CreatedAt, q.UpdatedAt = fromMicros(created), fromMicros(updated)
	return q, nil
}

func (q *queries) ProjectGet(ctx context.Context, name string) (store.Project, error) {
	p, err := scanProject(q.queryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE name = ?`, name))
	if err != nil {
		return p, notFound(err, "project %q", name)
	}
	return withWarehouse(p), nil
}

func (q *queries) ProjectGetByID(ctx context.Context, id int64) (store.Project, error) {
	p, err := scanProject(q.queryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE project_id = ?`, id))
	if err != nil {
		return p, notFound(err, "project %d", id)
	}
	return withWarehouse(p), nil
}

// withWarehouse hands back an empty sealed value as empty, not nil, as on
// PostgreSQL.
func withWarehouse(p store.Project) store.Project {
	if p.Warehouse == nil {
		p.Warehouse = []byte{}
	}
	return p
}

func (q *queries) ProjectList(ctx context.Context) ([]store.Project, error) {
	// NULL for warehouse: listing never ships the sealed connection.
	rows, err := q.query(ctx, `SELECT project_id, name, warehouse_type, NULL, created_at, updated_at
		FROM projects ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list projects: %w", err)
	}
	return collect(rows, scanProject, "list projects")
}

func (q *queries) QueryGet(ctx context.Context, uuid string) (store.Query, error) {
	got, err := scanQuery(q.queryRow(ctx, `SELECT `+queryCols+` FROM queries WHERE query_uuid = ?`, uuid))
	if err != nil {
		return got, notFound(err, "query %s", uuid)
	}
	return got, nil
}

func (q *queries) QueryList(ctx context.Context, projectID int64, offset, limit int) ([]store.Query, int64, error) {
	var total int64
	if err := q.queryRow(ctx, `SELECT count(*) FROM queries WHERE project_id = ?`, projectID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("sqlitedriver: count queries of project %d: %w", projectID, err)
	}
	rows, err := q.query(ctx, `SELECT `+queryCols+` FROM queries WHERE project_id = ? ORDER BY `+historyOrder+
		` LIMIT ? OFFSET ?`, projectID, limitOrAll(limit), max(offset, 0))
	if err != nil {
		return nil, 0, fmt.Errorf("sqlitedriver: list queries of project %d: %w", projectID, err)
	}
	list, err := collect(rows, scanQuery, "list queries")
	if err != nil {
		return nil, 0, err
	}
	return list, total, nil
}

// QueryCached never matches an empty cacheKey: a query without a key was
// not cacheable.
func (q *queries) QueryCached(ctx context.Context, projectID int64, cacheKey string, now time.Time) (store.Query, error) {
	what := fmt.Sprintf("cached result of project %d for key %q", projectID, cacheKey)
	if cacheKey == "" {
		return store.Query{}, fmt.Errorf("sqlitedriver: %s: %w", what, store.ErrNotFound)
	}
	got, err := scanQuery(q.queryRow(ctx, `SELECT `+queryCols+` FROM queries
		WHERE project_id = ? AND cache_key = ? AND status = 'ready' AND cache_hit = 0 AND expires_at > ?
		ORDER BY `+historyOrder+` LIMIT 1`, projectID, cacheKey, micros(now)))
	if err != nil {
		return got, notFound(err, "%s", what)
	}
	return got, nil
}

func (q *queries) QueriesQueuedBefore(ctx context.Context, before time.Time, limit int) ([]store.Query, error) {
	rows, err := q.query(ctx, `SELECT `+queryCols+` FROM queries
		WHERE status = 'queued' AND published_at <= ?
		ORDER BY published_at, query_uuid LIMIT ?`, micros(before), limitOrAll(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list queued queries: %w", err)
	}
	return collect(rows, scanQuery, "list queued queries")
}

func (q *queries) QueriesCreatedBefore(ctx context.Context, statuses []api.QueryStatus, t time.Time, limit int) ([]store.Query, error) {
	if len(statuses) == 0 {
		return nil, nil
	}
	list, err := json.Marshal(statuses)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list queries in %v: %w", statuses, err)
	}
	rows, err := q.query(ctx, `SELECT `+queryCols+` FROM queries
		WHERE status IN (SELECT value FROM json_each(?)) AND created_at <= ?
		ORDER BY created_at, query_uuid LIMIT ?`, string(list), micros(t), limitOrAll(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list queries in %v created before %s: %w", statuses, t.Format(time.RFC3339), err)
	}
	return collect(rows, scanQuery, "list queries created before")
}

func (q *queries) QueueStats(ctx context.Context) (store.QueueStats, error) {
	var s store.QueueStats
	var oldest sql.NullInt64
	err := q.queryRow(ctx, `SELECT
		(SELECT count(*) FROM queries WHERE status = 'queued'),
		(SELECT min(created_at) FROM queries WHERE status = 'queued'),
		(SELECT count(*) FROM queries WHERE status = 'executing')`).Scan(&s.Queued, &oldest, &s.Executing)
	if err != nil {
		return store.QueueStats{}, fmt.Errorf("sqlitedriver: queue stats: %w", err)
	}
	s.OldestQueued = fromNullMicros(oldest)
	return s, nil
}

// ProjectPut sets UpdatedAt to p.UpdatedAt (now when zero) and, for a new
// name, CreatedAt to p.CreatedAt (UpdatedAt when zero). Reusing the
// ProjectID of another name is ErrConflict.
func (t *tx) ProjectPut(ctx context.Context, p store.Project) (store.Project, error) {
	if p.ProjectID == 0 {
		return store.Project{}, fmt.Errorf("sqlitedriver: put project %q: ProjectID is 0; generate an id for it (it is kept if the name exists)", p.Name)
	}
	updated := micros(nowIfZero(p.UpdatedAt))
	created := updated
	if !p.CreatedAt.IsZero() {
		created = micros(p.CreatedAt)
	}
	got, err := scanProject(t.queryRow(ctx, `INSERT INTO projects (`+projectCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET warehouse_type = excluded.warehouse_type, warehouse = excluded.warehouse,
			updated_at = excluded.updated_at
		RETURNING `+projectCols,
		p.ProjectID, p.Name, p.WarehouseType, bytesArg(p.Warehouse), created, updated))
	if err != nil {
		return store.Project{}, insertErr(err, "project %q (id %d)", p.Name, p.ProjectID)
	}
	return withWarehouse(got), nil
}

// QueryInsert stores q as given; an empty Status means pending, a zero
// CreatedAt now and a zero UpdatedAt CreatedAt.
func (t *tx) QueryInsert(ctx context.Context, q store.Query) error {
	status := q.Status
	if status == "" {
		status = api.QueryPending
	}
	if !status.Valid() {
		return fmt.Errorf("sqlitedriver: insert query %s: unknown status %q", q.QueryUUID, status)
	}
	created := micros(nowIfZero(q.CreatedAt))
	updated := created
	if !q.UpdatedAt.IsZero() {
		updated = micros(q.UpdatedAt)
	}
	_, err := t.exec(ctx, `INSERT INTO queries (`+queryCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		q.QueryUUID, q.ProjectID, q.SQL, q.Lane, q.CacheKey, q.CacheHit, status, q.Error, jsonArg(q.Columns),
		q.TotalRows, q.ResultKey, q.WorkerID, q.Publishes, microsPtr(q.PublishedAt), created,
		microsPtr(q.StartedAt), microsPtr(q.EndedAt), microsPtr(q.ExpiresAt), updated,
		q.Kind, jsonArg(q.MetricQuery), q.Target, jsonArg(q.PreAggregate), q.BuildUUID, q.ClaimTokenID)
	if err != nil {
		return insertErr(err, "query %s", q.QueryUUID)
	}
	return nil
}

// QueryTransition is one conditional UPDATE run under the write lock, so of
// several transitions from the same status exactly one applies. Each update
// field is NULL when unset and leaves the column alone; Columns and
// PreAggregate are applied when non-nil (an empty document clears them).
func (t *tx) QueryTransition(ctx context.Context, uuid string, from []api.QueryStatus, to api.QueryStatus, upd store.QueryUpdate, now time.Time) (store.Query, error) {
	what := fmt.Sprintf("move query %s from %v to %s", uuid, from, to)
	if err := api.CheckQueryTransition(from, to); err != nil {
		return store.Query{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	fromList, err := json.Marshal(from)
	if err != nil {
		return store.Query{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	got, err := scanQuery(t.queryRow(ctx, `UPDATE queries SET status = ?3,
			error        = COALESCE(?4, error),
			columns      = CASE WHEN ?5 THEN ?6 ELSE columns END,
			total_rows   = COALESCE(?7, total_rows),
			result_key   = COALESCE(?8, result_key),
			worker_id    = COALESCE(?9, worker_id),
			published_at = COALESCE(?10, published_at),
			started_at   = COALESCE(?11, started_at),
			ended_at     = COALESCE(?12, ended_at),
			expires_at   = COALESCE(?13, expires_at),
			updated_at   = ?14,
			sql           = COALESCE(?15, sql),
			target        = COALESCE(?16, target),
			pre_aggregate = CASE WHEN ?17 THEN ?18 ELSE pre_aggregate END,
			build_uuid    = COALESCE(?19, build_uuid),
			claim_token_id = COALESCE(?20, claim_token_id)
		WHERE query_uuid = ?1 AND status IN (SELECT value FROM json_each(?2))
		RETURNING `+queryCols,
		uuid, string(fromList), to, upd.Error, upd.Columns != nil, jsonArg(upd.Columns), upd.TotalRows, upd.ResultKey,
		upd.WorkerID, microsPtr(upd.PublishedAt), microsPtr(upd.StartedAt), microsPtr(upd.EndedAt),
		microsPtr(upd.ExpiresAt), micros(nowIfZero(now)),
		upd.SQL, upd.Target, upd.PreAggregate != nil, jsonArg(upd.PreAggregate), upd.BuildUUID, upd.ClaimTokenID))
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return store.Query{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	// Failure path only: report why, with the row as it is now.
	cur, err := t.QueryGet(ctx, uuid)
	if err != nil {
		return store.Query{}, fmt.Errorf("sqlitedriver: %s: %w", what, err)
	}
	return cur, fmt.Errorf("sqlitedriver: %s: it is %s: %w", what, cur.Status, store.ErrConflict)
}

func (t *tx) QueryMarkRepublished(ctx context.Context, uuid string, now time.Time) (store.Query, error) {
	got, err := scanQuery(t.queryRow(ctx, `UPDATE queries SET publishes = publishes + 1, published_at = ?
		WHERE query_uuid = ? RETURNING `+queryCols, micros(nowIfZero(now)), uuid))
	if err != nil {
		return got, notFound(err, "mark query %s republished", uuid)
	}
	return got, nil
}
