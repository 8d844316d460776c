package api

import (
	"time"

	"github.com/millrace/millrace/internal/semantic"
)

// The public pre-aggregate and model endpoints' replies (camelCase, like
// the rest of /api/v2).

// ModelsPut is the reply of POST /api/v2/projects/{project}/models: the
// names of the models stored.
type ModelsPut struct {
	Models []string `json:"models"`
}

// ModelList is the reply of GET /api/v2/projects/{project}/models.
type ModelList struct {
	Models []semantic.Model `json:"models"`
}

// PreAggInfo is one declared pre-aggregate as
// GET /api/v2/projects/{project}/preaggregates lists it: its definition,
// the build serving it (if any), the latest build (which may have failed:
// its Error says why) and when it is next refreshed by cron.
type PreAggInfo struct {
	Model         string                `json:"model"`
	Name          string                `json:"name"`
	Definition    semantic.PreAggregate `json:"definition"`
	Active        *PreAggBuild          `json:"active,omitempty"`
	Last          *PreAggBuild          `json:"last,omitempty"`
	NextRefreshAt *time.Time            `json:"nextRefreshAt,omitempty"`
	// DefHash is the current definition's hash: only a build of it
	// serves. ActiveOutdated says the active build was made for an
	// earlier definition, so it no longer serves (a build of the current
	// one is pending, or failed).
	DefHash        string `json:"defHash,omitempty"`
	ActiveOutdated bool   `json:"activeOutdated,omitempty"`
	// LastError is the error of the newest failed build since the active
	// one: the active build kept serving through it.
	LastError string `json:"lastError,omitempty"`
	// KeyValue is refresh.key_sql's last polled value, and KeyCheckedAt
	// when it was polled.
	KeyValue     string     `json:"keyValue,omitempty"`
	KeyCheckedAt *time.Time `json:"keyCheckedAt,omitempty"`
}

// PreAggList is the reply of GET /api/v2/projects/{project}/preaggregates.
type PreAggList struct {
	PreAggregates []PreAggInfo `json:"preAggregates"`
}

// PreAggBuildList is the reply of
// GET /api/v2/projects/{project}/preaggregates/builds, newest first.
type PreAggBuildList struct {
	Builds []PreAggBuild `json:"builds"`
}

// RefreshStarted is the 202 reply of
// POST /api/v2/projects/{project}/preaggregates/{model}/{name}/refresh.
type RefreshStarted struct {
	BuildUUID string `json:"buildUuid"`
	// Status is queued for a new build; a refresh while one of the
	// current definition is already queued or building returns that one.
	Status  BuildStatus `json:"status,omitempty"`
	Trigger string      `json:"trigger,omitempty"`
}

// QueryHistoryEntry is one query of
// GET /api/v2/projects/{project}/query/history, newest first. A metric
// query carries its request (MetricQuery) and whether a pre-aggregate
// served it (CacheMetadata.PreAggregate); a SQL query has neither.
type QueryHistoryEntry struct {
	QueryUUID     string                `json:"queryUuid"`
	Status        QueryStatus           `json:"status"`
	SQL           string                `json:"sql"`
	Context       string                `json:"context"`
	CacheHit      bool                  `json:"cacheHit"`
	CacheMetadata *CacheMetadata        `json:"cacheMetadata,omitempty"`
	MetricQuery   *semantic.MetricQuery `json:"metricQuery,omitempty"`
	TotalResults  int64                 `json:"totalResults"`
	Error         string                `json:"error,omitempty"`
	CreatedAt     time.Time             `json:"createdAt"`
}

// QueryHistory is a page of the query history.
type QueryHistory struct {
	Queries  []QueryHistoryEntry `json:"queries"`
	Total    int64               `json:"total"`
	Page     int                 `json:"page"`
	PageSize int                 `json:"pageSize"`
}
