// Package semantic is Millrace's small metrics layer (the Lightdash
// contract's "explores"): models over a warehouse table or SQL, with typed
// dimensions and metrics, the pre-aggregates declared on them, metric
// queries in Lightdash's request shape, and compiling a metric query to the
// SQL of a warehouse dialect. Pure: no I/O. Package preagg matches metric
// queries with pre-aggregates and rewrites them onto materializations.
//
// Result types are chosen once, identically for PostgreSQL and DuckDB,
// because a warehouse answer and a pre-aggregate answer (DuckDB over
// Parquet) are compared for equality. A dimension keeps its source type,
// except time:
//
//	date dimension, raw             -> DATE      CAST(x AS DATE)
//	timestamp dimension, raw        -> TIMESTAMP CAST(x AS TIMESTAMP)
//	any time dimension at hour      -> TIMESTAMP date_trunc('hour', CAST(x AS TIMESTAMP))
//	any time dimension at day       -> DATE      CAST(CAST(x AS TIMESTAMP) AS DATE)
//	... at week|month|quarter|year  -> DATE      CAST(date_trunc('<grain>', CAST(x AS TIMESTAMP)) AS DATE)
//
// so day and coarser grains are dates (the period's first day; weeks start
// on Monday) and hour is a timestamp. Casting to TIMESTAMP first keeps
// PostgreSQL from promoting a date to timestamptz, whose truncation
// depends on the session time zone. A timestamptz column is read in the
// connection's time zone; pin it with `sql: created_at AT TIME ZONE 'UTC'`.
//
// Metrics: count and count_distinct are BIGINT; average, median and
// percentiles are DOUBLE PRECISION; sum, min and max keep the warehouse's
// type for the column (min and max of text follow its collation).
//
// Null semantics of the filter operators are in CondSQL's comment:
// notEquals matches NULL (it is the exact complement of equals, as in
// Lightdash); every other value operator never matches NULL.
package semantic

import (
	"encoding/json"
	"fmt"
)

// Pos is where a declaration was read: file:line:col, for problems.
type Pos struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
}

func (p Pos) String() string {
	if p.File == "" {
		return fmt.Sprintf("line %d", p.Line)
	}
	if p.Col > 0 {
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Grain is a time granularity a time dimension can be asked for at.
type Grain string

const (
	GrainHour    Grain = "hour"
	GrainDay     Grain = "day"
	GrainWeek    Grain = "week" // ISO weeks, starting Monday (date_trunc('week'))
	GrainMonth   Grain = "month"
	GrainQuarter Grain = "quarter"
	GrainYear    Grain = "year"
)

// Grains lists the grains, finest first.
var Grains = []Grain{GrainHour, GrainDay, GrainWeek, GrainMonth, GrainQuarter, GrainYear}

// Valid reports whether g is one of Grains.
func (g Grain) Valid() bool {
	for _, x := range Grains {
		if g == x {
			return true
		}
	}
	return false
}

// Derives reports whether data bucketed at g can be re-bucketed at q
// exactly: every q bucket is a union of whole g buckets. A week straddles
// months, quarters and years, so week derives only week (Lightdash bug
// #27537 served months from weeks and got wrong totals).
func (g Grain) Derives(q Grain) bool {
	switch g {
	case GrainHour:
		return q.Valid()
	case GrainDay:
		return q.Valid() && q != GrainHour
	case GrainWeek:
		return q == GrainWeek
	case GrainMonth:
		return q == GrainMonth || q == GrainQuarter || q == GrainYear
	case GrainQuarter:
		return q == GrainQuarter || q == GrainYear
	case GrainYear:
		return q == GrainYear
	}
	return false
}

// DimType is a dimension's type.
type DimType string

const (
	DimString    DimType = "string"
	DimNumber    DimType = "number"
	DimBoolean   DimType = "boolean"
	DimDate      DimType = "date"
	DimTimestamp DimType = "timestamp"
)

// IsTime reports whether the dimension can be asked for at a Grain.
func (t DimType) IsTime() bool { return t == DimDate || t == DimTimestamp }

// MetricType is how a metric aggregates.
type MetricType string

const (
	MetricCount         MetricType = "count"
	MetricCountDistinct MetricType = "count_distinct"
	MetricSum           MetricType = "sum"
	MetricMin           MetricType = "min"
	MetricMax           MetricType = "max"
	MetricAverage       MetricType = "average"
	MetricMedian        MetricType = "median"
	MetricPercentile    MetricType = "percentile"
)

// Additive reports whether partial aggregates of the metric can be
// re-aggregated (average is, through its stored sum and count).
func (t MetricType) Additive() bool {
	switch t {
	case MetricCount, MetricSum, MetricMin, MetricMax, MetricAverage:
		return true
	}
	return false
}

// Model is one explore: a table (or SQL) with dimensions, metrics and
// pre-aggregates. JSON is its canonical stored form.
type Model struct {
	Name          string         `json:"name"`
	Description   string         `json:"description,omitempty"`
	Table         string         `json:"table,omitempty"` // one of Table and SQL
	SQL           string         `json:"sql,omitempty"`
	Dimensions    []Dimension    `json:"dimensions"`
	Metrics       []Metric       `json:"metrics"`
	PreAggregates []PreAggregate `json:"pre_aggregates,omitempty"`
	Pos           Pos            `json:"pos,omitzero"`
}

// Dimension is a column (or expression) to group and filter by.
type Dimension struct {
	Name        string  `json:"name"`
	Type        DimType `json:"type"`
	SQL         string  `json:"sql,omitempty"` // defaults to the column named Name
	Description string  `json:"description,omitempty"`
	Pos         Pos     `json:"pos,omitzero"`
}

// Metric is an aggregate over the model's rows.
type Metric struct {
	Name string     `json:"name"`
	Type MetricType `json:"type"`
	// SQL is the aggregated column or expression; count may leave it empty
	// (count(*)). Others default to the column named Name.
	SQL string `json:"sql,omitempty"`
	// Percentile is 0 < p < 100 for MetricPercentile (median is 50).
	Percentile  float64 `json:"percentile,omitempty"`
	Description string  `json:"description,omitempty"`
	Pos         Pos     `json:"pos,omitzero"`
}

// PreAggregate is a declared materialization of a model at a grain.
type PreAggregate struct {
	Name          string   `json:"name"`
	Dimensions    []string `json:"dimensions"`               // dimension names (not field ids)
	Metrics       []string `json:"metrics"`                  // metric names
	TimeDimension string   `json:"time_dimension,omitempty"` // a date/timestamp dimension
	Granularity   Grain    `json:"granularity,omitempty"`    // required with TimeDimension
	// Filters scope the pre-aggregate: it holds only rows that pass all of
	// them (a conjunction), and serves only queries whose filters imply
	// them.
	Filters []FilterRule `json:"filters,omitempty"`
	MaxRows int          `json:"max_rows,omitempty"` // 0: PRE_AGGREGATES_MAX_ROWS
	Refresh Refresh      `json:"refresh,omitzero"`
	Pos     Pos          `json:"pos,omitzero"`
}

// Refresh says when a pre-aggregate is rebuilt and how stale it may serve.
type Refresh struct {
	Cron string `json:"cron,omitempty"` // robfig/cron five-field spec, UTC
	// KeySQL is polled every KeyEvery on the warehouse; a changed result
	// triggers a build (Cube's refresh_key.sql).
	KeySQL   string   `json:"key_sql,omitempty"`
	KeyEvery Duration `json:"key_every,omitempty"` // default 1m
	// PartitionBy splits the materialization by the time dimension, and
	// UpdateWindow bounds which partitions a refresh rebuilds (the newest
	// ones covering that span); older partitions are kept as built.
	PartitionBy  Grain    `json:"partition_by,omitempty"` // day | month
	UpdateWindow Duration `json:"update_window,omitempty"`
	// MaxStaleness turns a build older than this (by its data's age) into
	// a miss (BUILD_TOO_STALE) instead of a stale answer. 0: no limit.
	MaxStaleness Duration `json:"max_staleness,omitempty"`
}

// Duration is a time.Duration in nanoseconds in JSON; YAML takes Go
// duration strings ("90s", "6h") plus days ("3d").
type Duration int64

// MetricQuery is the Lightdash request shape of
// POST /api/v2/projects/{project}/query/metric-query's "query".
type MetricQuery struct {
	ExploreName string   `json:"exploreName"`
	Dimensions  []string `json:"dimensions"` // field ids
	Metrics     []string `json:"metrics"`    // field ids
	Filters     Filters  `json:"filters,omitzero"`
	Sorts       []Sort   `json:"sorts,omitempty"`
	Limit       int      `json:"limit,omitempty"` // default 500, at most 5000
	// AdditionalMetrics are custom metrics written in the query; a custom
	// SQL one is never served from a pre-aggregate (CUSTOM_SQL_METRIC).
	AdditionalMetrics []AdditionalMetric `json:"additionalMetrics,omitempty"`
	// TableCalculations and CustomDimensions exist in Lightdash's shape;
	// Millrace refuses them with a clear error.
	TableCalculations []json.RawMessage `json:"tableCalculations,omitempty"`
	CustomDimensions  []json.RawMessage `json:"customDimensions,omitempty"`
}

// AdditionalMetric is a metric defined in the query itself.
type AdditionalMetric struct {
	Name  string     `json:"name"`
	Table string     `json:"table,omitempty"`
	Type  MetricType `json:"type"`
	SQL   string     `json:"sql"`
}

// Filters splits filters on dimensions (WHERE) from filters on metrics
// (HAVING), as Lightdash does.
type Filters struct {
	Dimensions *FilterGroup `json:"dimensions,omitempty"`
	Metrics    *FilterGroup `json:"metrics,omitempty"`
}

// FilterGroup is an and- or or-group; its items are rules or groups.
type FilterGroup struct {
	ID  string       `json:"id,omitempty"`
	And []FilterItem `json:"and,omitempty"`
	Or  []FilterItem `json:"or,omitempty"`
}

// FilterItem is a rule (Target set) or a nested group (And or Or set).
type FilterItem struct {
	FilterRule
	And []FilterItem `json:"and,omitempty"`
	Or  []FilterItem `json:"or,omitempty"`
}

// FilterRule is one condition on a field.
type FilterRule struct {
	ID       string         `json:"id,omitempty"`
	Target   FilterTarget   `json:"target,omitzero"`
	Operator FilterOperator `json:"operator,omitempty"`
	Values   []any          `json:"values,omitempty"`
	// Disabled rules are ignored, as in Lightdash (a dashboard filter
	// switched off).
	Disabled bool `json:"disabled,omitempty"`
	Pos      Pos  `json:"pos,omitzero"` // set for declared (pre-aggregate) filters
}

// FilterTarget names the filtered field by its field id.
type FilterTarget struct {
	FieldID string `json:"fieldId"`
}

// FilterOperator is one of Lightdash's filter operators that Millrace
// supports.
type FilterOperator string

const (
	OpEquals             FilterOperator = "equals"
	OpNotEquals          FilterOperator = "notEquals"
	OpIsNull             FilterOperator = "isNull"
	OpNotNull            FilterOperator = "notNull"
	OpGreaterThan        FilterOperator = "greaterThan"
	OpGreaterThanOrEqual FilterOperator = "greaterThanOrEqual"
	OpLessThan           FilterOperator = "lessThan"
	OpLessThanOrEqual    FilterOperator = "lessThanOrEqual"
	OpInBetween          FilterOperator = "inBetween"
	OpStartsWith         FilterOperator = "startsWith"
	OpEndsWith           FilterOperator = "endsWith"
	OpInclude            FilterOperator = "include" // contains
)

// Sort orders the result by a field.
type Sort struct {
	FieldID    string `json:"fieldId"`
	Descending bool   `json:"descending"`
}

// Query limits.
const (
	DefaultLimit = 500
	MaxLimit     = 5000
)
