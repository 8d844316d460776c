package api

import (
	"time"

	"github.com/millrace/millrace/internal/semantic"
)

// MetricQuerySubmit is the body of
// POST /api/v2/projects/{project}/query/metric-query (Lightdash's shape).
type MetricQuerySubmit struct {
	Query           semantic.MetricQuery `json:"query"`
	Context         string               `json:"context,omitempty"` // the lane: interactive | background
	InvalidateCache bool                 `json:"invalidateCache"`
	// UsePreAggregates false sends the query to the warehouse even when a
	// pre-aggregate matches (miss reason BYPASSED): for comparing answers
	// and for audits. Millrace's own field; absent means true.
	UsePreAggregates *bool `json:"usePreAggregates,omitempty"`
}

// PreAggregateMeta is cacheMetadata.preAggregate: whether a metric query
// was served from a pre-aggregate, which, and if not, why not.
type PreAggregateMeta struct {
	Hit       bool        `json:"hit"`
	Name      string      `json:"name,omitempty"` // the pre-aggregate that served it (hit) or came closest (miss)
	Reason    *MissReason `json:"reason,omitempty"`
	BuildUUID string      `json:"buildUuid,omitempty"`
	BuiltAt   *time.Time  `json:"builtAt,omitempty"`  // when the serving build finished
	DataAsOf  *time.Time  `json:"dataAsOf,omitempty"` // how fresh its data is
}

// MissReason says why a metric query was not served from a pre-aggregate.
type MissReason struct {
	Code         string `json:"code"` // one of the PreAggMiss* codes
	Message      string `json:"message"`
	PreAggregate string `json:"preAggregate,omitempty"`
	FieldID      string `json:"fieldId,omitempty"`
}

// Miss reason codes, most specific last in the order the matcher checks.
const (
	PreAggMissDisabled        = "PRE_AGGREGATES_DISABLED"        // PRE_AGGREGATES_ENABLED=false
	PreAggMissBypassed        = "BYPASSED"                       // the request said usePreAggregates: false
	PreAggMissNone            = "NO_PRE_AGGREGATES"              // the model declares none
	PreAggMissCustomSQL       = "CUSTOM_SQL_METRIC"              // the query has a custom SQL metric
	PreAggMissFieldNotCovered = "FIELD_NOT_COVERED"              // a dimension, metric or filter field is not in it
	PreAggMissGrain           = "GRAIN_NOT_DERIVABLE"            // the query's grain cannot be derived from its grain
	PreAggMissNonAdditive     = "NON_ADDITIVE_NEEDS_EXACT_MATCH" // count_distinct, median, percentile need the same dimensions and grain
	PreAggMissFilterScope     = "FILTER_OUT_OF_SCOPE"            // the query's filters are not equal to or narrower than its filters
	PreAggMissNoBuild         = "NO_ACTIVE_MATERIALIZATION"      // it has never been built (or every build failed)
	PreAggMissStale           = "BUILD_TOO_STALE"                // its active build is older than refresh.max_staleness
	PreAggMissObjectLost      = "MATERIALIZATION_MISSING"        // the build's Parquet is gone; a rebuild was started
)

// BuildStatus is a pre-aggregate build's state.
type BuildStatus string

const (
	BuildQueued     BuildStatus = "queued"     // waiting for a pre-aggregate worker (or the server's executor)
	BuildBuilding   BuildStatus = "building"   // a worker claimed it
	BuildActive     BuildStatus = "active"     // serving; at most one per pre-aggregate
	BuildSuperseded BuildStatus = "superseded" // a newer build became active
	BuildFailed     BuildStatus = "failed"     // the build errored; the previous active build keeps serving
)

// PartitionObject is one Parquet file of a build: the whole
// materialization, or one time partition ("2024-05" for a month).
type PartitionObject struct {
	Key       string `json:"key"`    // "" for an unpartitioned build
	Object    string `json:"object"` // the storage key
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
	BuildUUID string `json:"buildUuid"` // the build that wrote it (kept partitions name an older one)
}

// PreAggBuild is one build as `millrace preagg` and the API show it.
type PreAggBuild struct {
	BuildUUID    string            `json:"buildUuid"`
	Project      string            `json:"project"`
	Model        string            `json:"model"`
	PreAggregate string            `json:"preAggregate"`
	Status       BuildStatus       `json:"status"`
	Trigger      string            `json:"trigger"` // manual | cron | key_sql | definition | missing | partition
	Rows         int64             `json:"rows"`
	Bytes        int64             `json:"bytes"`
	Partitions   []PartitionObject `json:"partitions,omitempty"`
	Rebuilt      []string          `json:"rebuilt,omitempty"` // partition keys this build recomputed (nil: all)
	Error        string            `json:"error,omitempty"`
	WorkerID     string            `json:"workerId,omitempty"`
	CreatedAt    time.Time         `json:"createdAt"`
	StartedAt    *time.Time        `json:"startedAt,omitempty"`
	BuiltAt      *time.Time        `json:"builtAt,omitempty"`
	DataAsOf     *time.Time        `json:"dataAsOf,omitempty"`
	DurationMs   int64             `json:"durationMs,omitempty"`
}

// BuildPlan is what a build computes: SQL to run on the warehouse whose
// rows are the materialization. When PartitionColumn is set, the rows are
// split into one Parquet object per distinct value of that column (the
// partition's start date, "2024-05-01"), which becomes the object's Key
// and is not stored as a column.
type BuildPlan struct {
	SQL             string `json:"sql"`
	PartitionColumn string `json:"partitionColumn,omitempty"`
}

// ClaimedBuild is what a pre-aggregate worker receives for a claimed build
// (POST /api/v2/internal/preaggregates/builds/{uuid}/claim).
type ClaimedBuild struct {
	BuildUUID    string        `json:"buildUuid"`
	Project      string        `json:"project"`
	Model        string        `json:"model"`
	PreAggregate string        `json:"preAggregate"`
	Warehouse    WarehouseConn `json:"warehouse"`
	Plan         BuildPlan     `json:"plan"` // what to compute

	Keep         []PartitionObject `json:"keep,omitempty"` // partitions reused from the active build
	MaxRows      int64             `json:"maxRows"`        // a build with more rows fails
	ObjectPrefix string            `json:"objectPrefix"`   // storage keys start with it
	KeySQL       string            `json:"keySql,omitempty"`
}

// BuildComplete is a worker's report of a finished build.
type BuildComplete struct {
	Partitions []PartitionObject `json:"partitions"` // every partition of the build, kept ones included
	KeyValue   string            `json:"keyValue,omitempty"`
	DataAsOf   *time.Time        `json:"dataAsOf,omitempty"`
}

// ServePlan is how a worker answers a metric query from a build: run SQL
// in DuckDB over the build's Parquet objects, registered as the view
// named by bus.PreAggView.
type ServePlan struct {
	BuildUUID string            `json:"buildUuid"`
	Objects   []PartitionObject `json:"objects"`
	SQL       string            `json:"sql"`
}

// QueryFallback is a worker's report that it could not serve a
// pre-aggregate query for a reason that is a miss, not an error (the
// build's Parquet is gone): the server records the reason, runs the query
// on the warehouse instead and starts a rebuild.
type QueryFallback struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
