package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Query statuses (the Lightdash contract). Every change is a compare-and-set
// from an expected status, so a late result can never overwrite a cancel.
const (
	QueryPending   = "pending"
	QueryQueued    = "queued"    // only on the NATS path
	QueryExecuting = "executing" // only on the NATS path
	QueryReady     = "ready"
	QueryError     = "error"
	QueryCancelled = "cancelled"
	QueryExpired   = "expired"
)

// IsTerminalQuery reports whether a query status is final.
func IsTerminalQuery(status string) bool {
	switch status {
	case QueryReady, QueryError, QueryCancelled, QueryExpired:
		return true
	}
	return false
}

// Project is a named warehouse connection. Warehouse is sealed (encrypted)
// JSON {"type", "url", ...}; the store never sees it in plaintext.
type Project struct {
	ProjectID     int64     `json:"project_id"`
	Name          string    `json:"name"`
	WarehouseType string    `json:"warehouse_type"` // postgres | duckdb | ...
	Warehouse     []byte    `json:"-"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// Query is one row of the query history: the truth about a warehouse query.
type Query struct {
	QueryUUID   string          `json:"query_uuid"`
	ProjectID   int64           `json:"project_id"`
	SQL         string          `json:"sql"`
	Lane        string          `json:"lane"` // interactive | background
	CacheKey    string          `json:"cache_key"`
	CacheHit    bool            `json:"cache_hit"`
	Status      string          `json:"status"`
	Error       string          `json:"error,omitempty"`
	Columns     json.RawMessage `json:"columns,omitempty"` // [{name, type}]
	TotalRows   int64           `json:"total_rows"`
	ResultKey   string          `json:"result_key,omitempty"` // results-store key (a cache hit shares its source's)
	WorkerID    string          `json:"worker_id,omitempty"`
	Publishes   int             `json:"publishes"`
	PublishedAt *time.Time      `json:"published_at,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	EndedAt     *time.Time      `json:"ended_at,omitempty"`
	ExpiresAt   *time.Time      `json:"expires_at,omitempty"` // results stale after this
	UpdatedAt   time.Time       `json:"updated_at"`
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
}

// QueueStats summarises queued queries for health and `millrace doctor`.
type QueueStats struct {
	Queued       int64      `json:"queued"`
	OldestQueued *time.Time `json:"oldest_queued,omitempty"` // CreatedAt of the oldest queued query
	Executing    int64      `json:"executing"`
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
	QueriesCreatedBefore(ctx context.Context, statuses []string, t time.Time, limit int) ([]Query, error)
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
	QueryTransition(ctx context.Context, uuid string, from []string, to string, upd QueryUpdate, now time.Time) (Query, error)
	// QueryMarkRepublished increments Publishes and sets PublishedAt = now.
	QueryMarkRepublished(ctx context.Context, uuid string, now time.Time) (Query, error)
}

// ValidQueryStatus reports whether s is one of the Query* statuses.
func ValidQueryStatus(s string) bool {
	switch s {
	case QueryPending, QueryQueued, QueryExecuting, QueryReady, QueryError, QueryCancelled, QueryExpired:
		return true
	}
	return false
}

// CheckQueryTransition rejects a typo in a status before it reaches a
// driver: an unknown `to` would strand the query, an unknown `from` never
// matches.
func CheckQueryTransition(from []string, to string) error {
	if len(from) == 0 {
		return errors.New("no expected status given")
	}
	for _, s := range from {
		if !ValidQueryStatus(s) {
			return fmt.Errorf("unknown expected query status %q", s)
		}
	}
	if !ValidQueryStatus(to) {
		return fmt.Errorf("unknown query status %q", to)
	}
	return nil
}
