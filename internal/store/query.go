package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// Project is a named warehouse connection. Warehouse is sealed (encrypted)
// JSON {"type", "url", ...}; the store never sees it in plaintext.
type Project struct {
	ProjectID     int64
	Name          string
	WarehouseType string // postgres | duckdb | ...
	Warehouse     []byte
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Query is one row of the query history: the truth about a warehouse query.
type Query struct {
	QueryUUID   string
	ProjectID   int64
	SQL         string
	Lane        string // interactive | background
	CacheKey    string
	CacheHit    bool
	Status      api.QueryStatus
	Error       string
	Columns     json.RawMessage // [{name, type}]
	TotalRows   int64
	ResultKey   string // results-store key (a cache hit shares its source's)
	WorkerID    string
	Publishes   int
	PublishedAt *time.Time
	CreatedAt   time.Time
	StartedAt   *time.Time
	EndedAt     *time.Time
	ExpiresAt   *time.Time // results stale after this
	UpdatedAt   time.Time

	// Metric queries (Kind "metric") keep the request and how they were
	// routed. SQL is then the compiled SQL of Target: the warehouse's
	// dialect, or DuckDB over the build for a pre-aggregate hit.
	Kind         string          // "sql" (or "") | "metric"
	MetricQuery  json.RawMessage // semantic.MetricQuery
	Target       string          // "warehouse" (or "") | "preagg"
	PreAggregate json.RawMessage // api.PreAggregateMeta
	BuildUUID    string          // the serving build on a hit

	// ClaimTokenID is the id of the worker token whose claim made the
	// query executing (0: no token, auth off or run in the server); only
	// that token may heartbeat, upload, fail or fall back.
	ClaimTokenID int64
}

// QueryUpdate lists the fields a transition may set; nil/zero fields are
// left unchanged.
type QueryUpdate struct {
	Error       *string
	Columns     json.RawMessage
	TotalRows   *int64
	ResultKey   *string
	WorkerID    *string
	PublishedAt *time.Time
	StartedAt   *time.Time
	EndedAt     *time.Time
	ExpiresAt   *time.Time
	// A pre-aggregate query that falls back to the warehouse changes
	// these (the build's Parquet was lost).
	SQL          *string
	Target       *string
	PreAggregate json.RawMessage
	BuildUUID    *string
	// ClaimTokenID is set by a claim (see Query.ClaimTokenID).
	ClaimTokenID *int64
}

// QueueStats summarises queued queries for health and `millrace doctor`.
type QueueStats struct {
	Queued       int64
	OldestQueued *time.Time // CreatedAt of the oldest queued query
	Executing    int64
}

// QueryQuerier holds the read operations of the query face.
type QueryQuerier interface {
	ProjectGet(ctx context.Context, name string) (Project, error)
	ProjectGetByID(ctx context.Context, id int64) (Project, error)
	ProjectList(ctx context.Context) ([]Project, error) // by name, Warehouse nil
	QueryGet(ctx context.Context, uuid string) (Query, error)
	// QueryList pages a project's history newest first (created_at desc,
	// then uuid) and returns the total count.
	QueryList(ctx context.Context, projectID int64, offset, limit int) ([]Query, int64, error)
	// QueryCached returns the newest ready, non-cache-hit query of the
	// project with cacheKey whose ExpiresAt is after now; ErrNotFound if none.
	QueryCached(ctx context.Context, projectID int64, cacheKey string, now time.Time) (Query, error)
	// QueriesQueuedBefore returns up to limit queued queries whose
	// PublishedAt <= before (notification presumed lost), oldest first.
	QueriesQueuedBefore(ctx context.Context, before time.Time, limit int) ([]Query, error)
	// QueriesCreatedBefore returns up to limit queries in one of statuses
	// created at or before t, oldest first (queue-timeout expiry).
	QueriesCreatedBefore(ctx context.Context, statuses []api.QueryStatus, t time.Time, limit int) ([]Query, error)
	QueueStats(ctx context.Context) (QueueStats, error)
}

// QueryTx holds the write operations of the query face.
type QueryTx interface {
	// ProjectPut inserts or replaces a project by name, keeping
	// ProjectID and CreatedAt of an existing one; returns the stored row.
	ProjectPut(ctx context.Context, p Project) (Project, error)
	QueryInsert(ctx context.Context, q Query) error
	// QueryTransition moves a query to status `to` and applies upd, only if
	// its current status is one of from; ErrConflict otherwise (the
	// returned Query then holds the current row), ErrNotFound if absent.
	QueryTransition(ctx context.Context, uuid string, from []api.QueryStatus, to api.QueryStatus, upd QueryUpdate, now time.Time) (Query, error)
	// QueryMarkRepublished increments Publishes and sets PublishedAt = now.
	QueryMarkRepublished(ctx context.Context, uuid string, now time.Time) (Query, error)
}
