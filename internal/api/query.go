package api

import (
	"encoding/json"
	"time"
)

// The warehouse-query API (/api/v2, the Lightdash contract) uses camelCase
// field names; its worker protocol under /api/v2/internal uses snake_case.

// WarehouseConn is a project's warehouse connection.
type WarehouseConn struct {
	Type string `json:"type"` // postgres | duckdb
	URL  string `json:"url"`
}

// Column is a result column.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// ProjectRequest is the body of POST /api/v2/projects.
type ProjectRequest struct {
	Name      string        `json:"name"`
	Warehouse WarehouseConn `json:"warehouse"`
}

// Project is a project as the API shows it (the connection is never shown).
type Project struct {
	ProjectID     int64     `json:"project_id"`
	Name          string    `json:"name"`
	WarehouseType string    `json:"warehouse_type"`
	CreatedAt     time.Time `json:"created_at,omitzero"`
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
}

// QuerySubmit is the body of POST /api/v2/projects/{project}/query/sql.
type QuerySubmit struct {
	SQL             string `json:"sql"`
	Context         string `json:"context,omitempty"` // the lane: interactive | background
	InvalidateCache bool   `json:"invalidateCache"`
}

// CacheMetadata says whether a query was answered from the cache.
type CacheMetadata struct {
	CacheHit bool `json:"cacheHit"`
	// PreAggregate is set for metric queries.
	PreAggregate *PreAggregateMeta `json:"preAggregate,omitempty"`
}

// Submitted is the reply to a query submission.
type Submitted struct {
	QueryUUID     string        `json:"queryUuid"`
	CacheMetadata CacheMetadata `json:"cacheMetadata"`
}

// QueryPage is the reply of a poll: the status, and a page of rows once
// ready.
type QueryPage struct {
	QueryUUID       string           `json:"queryUuid"`
	Status          QueryStatus      `json:"status"`
	Error           string           `json:"error,omitempty"`
	Rows            []map[string]any `json:"rows"`
	Columns         []Column         `json:"columns"`
	TotalResults    int64            `json:"totalResults"`
	TotalPageCount  int64            `json:"totalPageCount"`
	NextPage        *int             `json:"nextPage"`
	PreviousPage    *int             `json:"previousPage"`
	ExecutionTimeMs int64            `json:"initialQueryExecutionMs"`
	// CacheMetadata is set for metric queries: it says whether the
	// query was served from a pre-aggregate (it can change after the
	// submit's reply, when a lost materialization sends it to the
	// warehouse).
	CacheMetadata *CacheMetadata `json:"cacheMetadata,omitempty"`
}

// ClaimedQuery is what a warehouse worker receives for a claimed query.
type ClaimedQuery struct {
	QueryUUID string        `json:"queryUuid"`
	SQL       string        `json:"sql"`
	Lane      string        `json:"lane"`
	Warehouse WarehouseConn `json:"warehouse"`
	// PreAggregate is set when the query is served from a pre-aggregate
	// build instead of the warehouse (pre-aggregate workers only).
	PreAggregate *ServePlan `json:"preAggregate,omitempty"`
}

// QueryRecord is one query of the history as the worker protocol shows it
// (GET /api/v2/internal/queries/{uuid}, without its SQL).
type QueryRecord struct {
	QueryUUID   string          `json:"query_uuid"`
	ProjectID   int64           `json:"project_id"`
	SQL         string          `json:"sql"`
	Lane        string          `json:"lane"`
	CacheKey    string          `json:"cache_key"`
	CacheHit    bool            `json:"cache_hit"`
	Status      QueryStatus     `json:"status"`
	Error       string          `json:"error,omitempty"`
	Columns     json.RawMessage `json:"columns,omitempty"`
	TotalRows   int64           `json:"total_rows"`
	ResultKey   string          `json:"result_key,omitempty"`
	WorkerID    string          `json:"worker_id,omitempty"`
	Publishes   int             `json:"publishes"`
	PublishedAt *time.Time      `json:"published_at,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	EndedAt     *time.Time      `json:"ended_at,omitempty"`
	ExpiresAt   *time.Time      `json:"expires_at,omitempty"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

// QueueStats summarises queued queries, in the health reply's detail.
type QueueStats struct {
	Queued       int64      `json:"queued"`
	OldestQueued *time.Time `json:"oldest_queued,omitempty"`
	Executing    int64      `json:"executing"`
}
