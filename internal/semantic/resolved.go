package semantic

// Field ids follow Lightdash: a model's field is "<model>_<name>", and a
// time dimension at a grain is "<model>_<name>_<grain>" (orders_created_at_day).
// Resolve also accepts the bare "<name>" and "<name>_<grain>" when that is
// unambiguous within the explore, which keeps the CLI short.

// FieldID is the Lightdash field id of a model's field, at grain if set.
func FieldID(model, name string, grain Grain) string {
	id := model + "_" + name
	if grain != "" {
		id += "_" + string(grain)
	}
	return id
}

// Field is one resolved field of a metric query.
type Field struct {
	ID     string            // the field id (canonical "<model>_<name>[_<grain>]"), the result column's name
	Dim    *Dimension        // a dimension, or nil
	Grain  Grain             // for a time dimension asked at a grain; "" is the raw value
	Metric *Metric           // a model metric, or nil
	Custom *AdditionalMetric // a custom metric from the query, or nil
}

// IsDimension reports whether f is a dimension.
func (f Field) IsDimension() bool { return f.Dim != nil }

// Resolved is a metric query checked against its model: every field found
// and typed, filters split into WHERE (dimensions) and HAVING (metrics).
type Resolved struct {
	Model      *Model
	Dimensions []Field
	Metrics    []Field // model metrics and custom ones, in the query's order
	Where      *Cond   // nil: none
	Having     *Cond   // nil: none
	Sorts      []ResolvedSort
	Limit      int // 1..MaxLimit
}

// Cond is a filter tree node: a rule, or an and/or of children.
type Cond struct {
	Or    bool // the children are or-ed (else and-ed)
	Items []*Cond
	Rule  *Rule // a leaf when set
}

// Rule is a resolved filter rule. Values are typed by the field: string,
// float64, bool, or time.Time (dates and timestamps, UTC).
type Rule struct {
	Field    Field
	Operator FilterOperator
	Values   []any
}

// ResolvedSort orders by a field of the query.
type ResolvedSort struct {
	Field      Field
	Descending bool
}

// Dialect is a SQL dialect Millrace compiles to.
type Dialect string

const (
	Postgres Dialect = "postgres"
	DuckDB   Dialect = "duckdb"
)
