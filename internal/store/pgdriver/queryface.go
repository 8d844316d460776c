package pgdriver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// The warehouse-query face: projects and the query history (store.QueryQuerier
// and store.QueryTx).

var (
	_ store.QueryQuerier = querier{}
	_ store.QueryTx      = (*tx)(nil)
)

const (
	projectCols = "project_id, name, warehouse_type, warehouse, created_at, updated_at"
	queryCols   = "query_uuid, project_id, sql, lane, cache_key, cache_hit, status, error, columns, total_rows, " +
		"result_key, worker_id, publishes, published_at, created_at, started_at, ended_at, expires_at, updated_at, " +
		"kind, metric_query, target, pre_aggregate, build_uuid, claim_token_id"
	// historyOrder is newest first; the uuid breaks ties between queries
	// created in the same microsecond so paging is stable.
	historyOrder = "created_at DESC, query_uuid DESC"
)

func scanProject(row pgx.Row) (store.Project, error) {
	var p store.Project
	err := row.Scan(&p.ProjectID, &p.Name, &p.WarehouseType, &p.Warehouse, &p.CreatedAt, &p.UpdatedAt)
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return p, err
}

func scanQuery(row pgx.Row) (store.Query, error) {
	var (
		q                             store.Query
		columns, metricQuery, preAggr []byte
	)
	err := row.Scan(&q.QueryUUID, &q.ProjectID, &q.SQL, &q.Lane, &q.CacheKey, &q.CacheHit, &q.Status, &q.Error,
		&columns, &q.TotalRows, &q.ResultKey, &q.WorkerID, &q.Publishes, &q.PublishedAt, &q.CreatedAt,
		&q.StartedAt, &q.EndedAt, &q.ExpiresAt, &q.UpdatedAt,
		&q.Kind, &metricQuery, &q.Target, &preAggr, &q.BuildUUID, &q.ClaimTokenID)
	q.Columns, q.MetricQuery, q.PreAggregate = columns, metricQuery, preAggr
	q.PublishedAt, q.StartedAt, q.EndedAt, q.ExpiresAt = utcPtr(q.PublishedAt), utcPtr(q.StartedAt), utcPtr(q.EndedAt), utcPtr(q.ExpiresAt)
	q.CreatedAt, q.UpdatedAt = q.CreatedAt.UTC(), q.UpdatedAt.UTC()
	return q, err
}

func (q querier) ProjectGet(ctx context.Context, name string) (store.Project, error) {
	p, err := scanProject(q.db.QueryRow(ctx, "SELECT "+projectCols+" FROM projects WHERE name = $1", name))
	if err != nil {
		return store.Project{}, notFound(err, fmt.Sprintf("project %q", name))
	}
	return p, nil
}

func (q querier) ProjectGetByID(ctx context.Context, id int64) (store.Project, error) {
	p, err := scanProject(q.db.QueryRow(ctx, "SELECT "+projectCols+" FROM projects WHERE project_id = $1", id))
	if err != nil {
		return store.Project{}, notFound(err, fmt.Sprintf("project %d", id))
	}
	return p, nil
}

func (q querier) ProjectList(ctx context.Context) ([]store.Project, error) {
	// NULL for warehouse: listing never ships the sealed connection. COLLATE
	// "C" gives byte order whatever the database locale, as SQLite does.
	rows, err := q.db.Query(ctx, `SELECT project_id, name, warehouse_type, NULL::bytea, created_at, updated_at
		FROM projects ORDER BY name COLLATE "C"`)
	list, err := collect(rows, err, scanProject)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list projects: %w", err)
	}
	return list, nil
}

func (q querier) QueryGet(ctx context.Context, uuid string) (store.Query, error) {
	got, err := scanQuery(q.db.QueryRow(ctx, "SELECT "+queryCols+" FROM queries WHERE query_uuid = $1", uuid))
	if err != nil {
		return store.Query{}, notFound(err, fmt.Sprintf("query %s", uuid))
	}
	return got, nil
}

func (q querier) QueryList(ctx context.Context, projectID int64, offset, limit int) ([]store.Query, int64, error) {
	var total int64
	if err := q.db.QueryRow(ctx, "SELECT count(*) FROM queries WHERE project_id = $1", projectID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("pgdriver: count queries of project %d: %w", projectID, err)
	}
	rows, err := q.db.Query(ctx, "SELECT "+queryCols+" FROM queries WHERE project_id = $1 ORDER BY "+historyOrder+
		" OFFSET $2 LIMIT $3", projectID, max(offset, 0), limitArg(limit))
	list, err := collect(rows, err, scanQuery)
	if err != nil {
		return nil, 0, fmt.Errorf("pgdriver: list queries of project %d: %w", projectID, err)
	}
	return list, total, nil
}

// QueryCached never matches an empty cacheKey: a query without a key was
// not cacheable.
func (q querier) QueryCached(ctx context.Context, projectID int64, cacheKey string, now time.Time) (store.Query, error) {
	what := fmt.Sprintf("cached result of project %d for key %q", projectID, cacheKey)
	if cacheKey == "" {
		return store.Query{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	got, err := scanQuery(q.db.QueryRow(ctx, "SELECT "+queryCols+` FROM queries
		WHERE project_id = $1 AND cache_key = $2 AND status = 'ready' AND NOT cache_hit AND expires_at > $3
		ORDER BY `+historyOrder+` LIMIT 1`, projectID, cacheKey, ts(now)))
	if err != nil {
		return store.Query{}, notFound(err, what)
	}
	return got, nil
}

func (q querier) QueriesQueuedBefore(ctx context.Context, before time.Time, limit int) ([]store.Query, error) {
	rows, err := q.db.Query(ctx, "SELECT "+queryCols+` FROM queries
		WHERE status = 'queued' AND published_at <= $1
		ORDER BY published_at, query_uuid LIMIT $2`, ts(before), limitArg(limit))
	list, err := collect(rows, err, scanQuery)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list queued queries: %w", err)
	}
	return list, nil
}

func (q querier) QueriesCreatedBefore(ctx context.Context, statuses []api.QueryStatus, t time.Time, limit int) ([]store.Query, error) {
	if len(statuses) == 0 {
		return nil, nil
	}
	rows, err := q.db.Query(ctx, "SELECT "+queryCols+` FROM queries
		WHERE status = ANY($1) AND created_at <= $2
		ORDER BY created_at, query_uuid LIMIT $3`, statuses, ts(t), limitArg(limit))
	list, err := collect(rows, err, scanQuery)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list queries in %v created before %s: %w", statuses, t.Format(time.RFC3339), err)
	}
	return list, nil
}

func (q querier) QueueStats(ctx context.Context) (store.QueueStats, error) {
	var s store.QueueStats
	err := q.db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM queries WHERE status = 'queued'),
		(SELECT min(created_at) FROM queries WHERE status = 'queued'),
		(SELECT count(*) FROM queries WHERE status = 'executing')`).Scan(&s.Queued, &s.OldestQueued, &s.Executing)
	if err != nil {
		return store.QueueStats{}, fmt.Errorf("pgdriver: queue stats: %w", err)
	}
	s.OldestQueued = utcPtr(s.OldestQueued)
	return s, nil
}

// ProjectPut sets UpdatedAt to p.UpdatedAt (now when zero) and, for a new
// name, CreatedAt to p.CreatedAt (UpdatedAt when zero). Reusing the
// ProjectID of another name is ErrConflict.
func (t *tx) ProjectPut(ctx context.Context, p store.Project) (store.Project, error) {
	if p.ProjectID == 0 {
		return store.Project{}, fmt.Errorf("pgdriver: put project %q: ProjectID is 0; generate an id for it (it is kept if the name exists)", p.Name)
	}
	updated := tsOrNow(p.UpdatedAt)
	created := updated
	if !p.CreatedAt.IsZero() {
		created = ts(p.CreatedAt)
	}
	got, err := scanProject(t.tx.QueryRow(ctx, "INSERT INTO projects ("+projectCols+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET warehouse_type = excluded.warehouse_type, warehouse = excluded.warehouse,
			updated_at = excluded.updated_at
		RETURNING `+projectCols,
		p.ProjectID, p.Name, p.WarehouseType, bytesArg(p.Warehouse), created, updated))
	if err != nil {
		return store.Project{}, insertErr(err, fmt.Sprintf("project %q (id %d)", p.Name, p.ProjectID))
	}
	return got, nil
}

// QueryInsert stores q as given; an empty Status means pending, a zero
// CreatedAt now and a zero UpdatedAt CreatedAt.
func (t *tx) QueryInsert(ctx context.Context, q store.Query) error {
	status := q.Status
	if status == "" {
		status = api.QueryPending
	}
	if !status.Valid() {
		return fmt.Errorf("pgdriver: insert query %s: unknown status %q", q.QueryUUID, status)
	}
	created := tsOrNow(q.CreatedAt)
	updated := created
	if !q.UpdatedAt.IsZero() {
		updated = ts(q.UpdatedAt)
	}
	_, err := t.tx.Exec(ctx, "INSERT INTO queries ("+queryCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
			$20, $21, $22, $23, $24, $25)`,
		q.QueryUUID, q.ProjectID, q.SQL, q.Lane, q.CacheKey, q.CacheHit, status, q.Error, jsonArg(q.Columns),
		q.TotalRows, q.ResultKey, q.WorkerID, q.Publishes, tsPtrArg(q.PublishedAt), created,
		tsPtrArg(q.StartedAt), tsPtrArg(q.EndedAt), tsPtrArg(q.ExpiresAt), updated,
		q.Kind, jsonArg(q.MetricQuery), q.Target, jsonArg(q.PreAggregate), q.BuildUUID, q.ClaimTokenID)
	if err != nil {
		return insertErr(err, fmt.Sprintf("query %s", q.QueryUUID))
	}
	return nil
}

// QueryTransition is one conditional UPDATE: under READ COMMITTED a writer
// that waited on the row lock re-checks the status against the committed
// row, so of several concurrent transitions from the same status exactly
// one applies. Each update field is NULL when unset and leaves the column
// alone; Columns and PreAggregate are applied when non-nil (an empty
// document clears them).
func (t *tx) QueryTransition(ctx context.Context, uuid string, from []api.QueryStatus, to api.QueryStatus, upd store.QueryUpdate, now time.Time) (store.Query, error) {
	what := fmt.Sprintf("move query %s from %v to %s", uuid, from, to)
	if err := api.CheckQueryTransition(from, to); err != nil {
		return store.Query{}, fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	got, err := scanQuery(t.tx.QueryRow(ctx, `UPDATE queries SET status = $3,
			error        = COALESCE($4::text, error),
			columns      = CASE WHEN $5::boolean THEN $6::json ELSE columns END,
			total_rows   = COALESCE($7::bigint, total_rows),
			result_key   = COALESCE($8::text, result_key),
			worker_id    = COALESCE($9::text, worker_id),
			published_at = COALESCE($10::timestamptz, published_at),
			started_at   = COALESCE($11::timestamptz, started_at),
			ended_at     = COALESCE($12::timestamptz, ended_at),
			expires_at   = COALESCE($13::timestamptz, expires_at),
			updated_at   = $14,
			sql           = COALESCE($15::text, sql),
			target        = COALESCE($16::text, target),
			pre_aggregate = CASE WHEN $17::boolean THEN $18::json ELSE pre_aggregate END,
			build_uuid    = COALESCE($19::text, build_uuid),
			claim_token_id = COALESCE($20::bigint, claim_token_id)
		WHERE query_uuid = $1 AND status = ANY($2)
		RETURNING `+queryCols,
		uuid, from, to, upd.Error, upd.Columns != nil, jsonArg(upd.Columns), upd.TotalRows, upd.ResultKey,
		upd.WorkerID, tsPtrArg(upd.PublishedAt), tsPtrArg(upd.StartedAt), tsPtrArg(upd.EndedAt),
		tsPtrArg(upd.ExpiresAt), tsOrNow(now),
		upd.SQL, upd.Target, upd.PreAggregate != nil, jsonArg(upd.PreAggregate), upd.BuildUUID, upd.ClaimTokenID))
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.Query{}, fmt.Errorf("pgdriver: %s: %w", what, err)
	}
	// Failure path only: report why, with the row as it is now.
	cur, err := t.QueryGet(ctx, uuid)
	if err != nil {
		return store.Query{}, fmt.Errorf("%s: %w", what, err)
	}
	return cur, fmt.Errorf("%s: it is %s: %w", what, cur.Status, store.ErrConflict)
}

func (t *tx) QueryMarkRepublished(ctx context.Context, uuid string, now time.Time) (store.Query, error) {
	got, err := scanQuery(t.tx.QueryRow(ctx, `UPDATE queries SET publishes = publishes + 1, published_at = $2
		WHERE query_uuid = $1 RETURNING `+queryCols, uuid, tsOrNow(now)))
	if err != nil {
		return store.Query{}, notFound(err, fmt.Sprintf("mark query %s republished", uuid))
	}
	return got, nil
}
