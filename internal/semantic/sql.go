package semantic

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SQL building blocks shared by Compile (the warehouse path) and package
// preagg (the plan that materializes a pre-aggregate and the rewrite that
// answers a query from it). Both paths must give equal answers, so every
// choice is made once here and spelled the same in both dialects; the
// result types are in the package comment (types.go).

// QuoteIdent quotes an identifier for both dialects: "a""b".
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// Literal renders a value as a SQL literal of dialect d: nil -> NULL, bool,
// numbers, strings (quotes doubled; in PostgreSQL a string with a backslash
// is written as E'...' so it is safe whatever standard_conforming_strings
// says), time.Time as DATE 'yyyy-mm-dd' at midnight UTC and TIMESTAMP
// 'yyyy-mm-dd hh:mm:ss.ffffff' otherwise. Other types are rendered as the
// string of their fmt.Sprint.
func Literal(d Dialect, v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case bool:
		if x {
			return "TRUE"
		}
		return "FALSE"
	case float64:
		return floatLiteral(x)
	case float32:
		return floatLiteral(float64(x))
	case int:
		return intLiteral(int64(x))
	case int64:
		return intLiteral(x)
	case int32:
		return intLiteral(int64(x))
	case string:
		return stringLiteral(d, x)
	case time.Time:
		t := x.UTC()
		if t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0 {
			return "DATE '" + t.Format(time.DateOnly) + "'"
		}
		return timestampLiteral(t)
	}
	return stringLiteral(d, fmt.Sprint(v))
}

func timestampLiteral(t time.Time) string {
	return "TIMESTAMP '" + t.UTC().Format("2006-01-02 15:04:05.999999") + "'"
}

func intLiteral(i int64) string {
	if i < 0 {
		return "(" + strconv.FormatInt(i, 10) + ")"
	}
	return strconv.FormatInt(i, 10)
}

func floatLiteral(f float64) string {
	switch {
	case math.IsNaN(f):
		return "CAST('NaN' AS DOUBLE PRECISION)"
	case math.IsInf(f, 1):
		return "CAST('Infinity' AS DOUBLE PRECISION)"
	case math.IsInf(f, -1):
		return "CAST('-Infinity' AS DOUBLE PRECISION)"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if f < 0 {
		return "(" + s + ")" // never "- -1" or "--1" next to another minus
	}
	return s
}

func stringLiteral(d Dialect, s string) string {
	s = strings.ReplaceAll(s, "'", "''")
	if d == Postgres && strings.Contains(s, `\`) {
		return "E'" + strings.ReplaceAll(s, `\`, `\\`) + "'"
	}
	return "'" + s + "'"
}

// FromClause is the model's source with the alias t: the table as
// declared (validated as a possibly schema-qualified identifier), or its
// SQL as a derived table. Expressions may name the alias as ${TABLE}.
func FromClause(m *Model) string {
	if m.SQL != "" {
		sql := strings.TrimRight(strings.TrimSpace(m.SQL), "; \t\r\n")
		return "(\n" + sql + "\n) AS t"
	}
	if !tableRE.MatchString(m.Table) {
		// Never reached for a parsed model (the parser refuses such a
		// table); a model built in code still cannot inject SQL here.
		return QuoteIdent(m.Table) + " AS t"
	}
	return m.Table + " AS t"
}

// tableRE is a table name, optionally schema- (and catalog-) qualified,
// each part a plain or double-quoted identifier.
var tableRE = regexp.MustCompile(`^(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")(?:\.(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")){0,2}$`)

// expr wraps a model expression in parentheses, with ${TABLE} meaning the
// alias t. A trailing line comment cannot swallow the closing parenthesis.
func expr(sql string) string {
	sql = strings.TrimSpace(strings.ReplaceAll(sql, "${TABLE}", "t"))
	if strings.Contains(sql, "--") {
		return "(" + sql + "\n)"
	}
	return "(" + sql + ")"
}

func dimSource(dim *Dimension) string {
	if dim.SQL != "" {
		return expr(dim.SQL)
	}
	return QuoteIdent(dim.Name)
}

// DimResultType is the SQL type family a dimension has at grain g in a
// result: "date" or "timestamp" for time dimensions (see the table above),
// else the dimension's own type.
func DimResultType(dim *Dimension, g Grain) DimType {
	if !dim.Type.IsTime() {
		return dim.Type
	}
	switch g {
	case GrainHour:
		return DimTimestamp
	case GrainDay, GrainWeek, GrainMonth, GrainQuarter, GrainYear:
		return DimDate
	}
	return dim.Type
}

// DimExpr is the expression of dim at grain g ("" is the raw value) over
// the model's source rows, without an alias. Package preagg re-buckets a
// stored time column by passing a Dimension named after the column.
func DimExpr(d Dialect, m *Model, dim *Dimension, g Grain) string {
	src := dimSource(dim)
	if !dim.Type.IsTime() {
		return src
	}
	if g == "" || !g.Valid() {
		if dim.Type == DimDate {
			return "CAST(" + src + " AS DATE)"
		}
		return "CAST(" + src + " AS TIMESTAMP)"
	}
	ts := "CAST(" + src + " AS TIMESTAMP)"
	switch g {
	case GrainHour:
		return "date_trunc('hour', " + ts + ")"
	case GrainDay:
		return "CAST(" + ts + " AS DATE)"
	}
	return "CAST(date_trunc('" + string(g) + "', " + ts + ") AS DATE)"
}

// metricArg is the aggregated expression: the metric's SQL, or the column
// named like the metric.
func metricArg(met *Metric) string {
	if met.SQL != "" {
		return expr(met.SQL)
	}
	return QuoteIdent(met.Name)
}

// MetricAggExpr is the aggregate of met over the model's source rows,
// without an alias.
func MetricAggExpr(d Dialect, m *Model, met *Metric) string {
	switch met.Type {
	case MetricCount:
		if met.SQL == "" {
			return "count(*)"
		}
		return "count(" + metricArg(met) + ")"
	case MetricCountDistinct:
		return "count(DISTINCT " + metricArg(met) + ")"
	case MetricSum:
		return "sum(" + metricArg(met) + ")"
	case MetricMin:
		return "min(" + metricArg(met) + ")"
	case MetricMax:
		return "max(" + metricArg(met) + ")"
	case MetricAverage:
		return "CAST(avg(" + metricArg(met) + ") AS DOUBLE PRECISION)"
	case MetricMedian:
		return percentileExpr(d, metricArg(met), 50)
	case MetricPercentile:
		return percentileExpr(d, metricArg(met), met.Percentile)
	}
	// Unreachable for a validated model; an invalid SQL token keeps a
	// mistake loud rather than silently counting.
	return "invalid_metric_type(" + QuoteIdent(string(met.Type)) + ")"
}

// percentileExpr is the continuous (interpolated) percentile p (0..100).
func percentileExpr(d Dialect, arg string, p float64) string {
	frac := strconv.FormatFloat(p/100, 'g', -1, 64)
	arg = "CAST(" + arg + " AS DOUBLE PRECISION)"
	if d == DuckDB {
		return "quantile_cont(" + arg + ", " + frac + ")"
	}
	return "percentile_cont(" + frac + ") WITHIN GROUP (ORDER BY " + arg + ")"
}

// CondSQL renders a filter tree. col gives the SQL of each rule's field
// (DimExpr for WHERE, MetricAggExpr for HAVING in Compile; a stored
// column in package preagg). An empty and-group is TRUE, an empty
// or-group FALSE. Null semantics (written once, the same in both
// dialects):
//
//	equals [a, b]        x IN (a, b)                    NULL never matches
//	notEquals [a, b]     (x IS NULL OR x NOT IN (a, b)) NULL matches: the complement of equals, as in Lightdash
//	isNull / notNull     x IS NULL / x IS NOT NULL
//	greaterThan ...      x > a (>=, <, <=)              NULL never matches
//	inBetween [a, b]     (x >= a AND x <= b)            inclusive both ends
//	startsWith [a, ...]  (x LIKE 'a%' OR ...)           case-sensitive, % _ ! escaped (ESCAPE '!'); NULL never matches
//	endsWith, include    x LIKE '%a', x LIKE '%a%'      likewise (include is case-sensitive, unlike Lightdash,
//	                                                    so PostgreSQL and DuckDB agree on every character)
func CondSQL(d Dialect, c *Cond, col func(Field) string) (string, error) {
	if c == nil {
		return "TRUE", nil
	}
	if c.Rule != nil {
		return RuleSQL(d, c.Rule, col(c.Rule.Field))
	}
	if len(c.Items) == 0 {
		if c.Or {
			return "FALSE", nil
		}
		return "TRUE", nil
	}
	sep := " AND "
	if c.Or {
		sep = " OR "
	}
	parts := make([]string, 0, len(c.Items))
	for _, it := range c.Items {
		s, err := CondSQL(d, it, col)
		if err != nil {
			return "", err
		}
		parts = append(parts, s)
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return "(" + strings.Join(parts, sep) + ")", nil
}

// RuleSQL renders one rule over the column expression x (see CondSQL).
func RuleSQL(d Dialect, r *Rule, x string) (string, error) {
	lit := func(v any) string { return ruleLiteral(d, r.Field, v) }
	need := func(n int) error {
		if len(r.Values) != n {
			return fmt.Errorf("filter on %s: operator %s takes %d value(s), got %d", r.Field.ID, r.Operator, n, len(r.Values))
		}
		return nil
	}
	list := func() (string, error) {
		if len(r.Values) == 0 {
			return "", fmt.Errorf("filter on %s: operator %s needs at least one value", r.Field.ID, r.Operator)
		}
		ls := make([]string, len(r.Values))
		for i, v := range r.Values {
			ls[i] = lit(v)
		}
		return strings.Join(ls, ", "), nil
	}
	switch r.Operator {
	case OpEquals:
		l, err := list()
		if err != nil {
			return "", err
		}
		return x + " IN (" + l + ")", nil
	case OpNotEquals:
		l, err := list()
		if err != nil {
			return "", err
		}
		return "(" + x + " IS NULL OR " + x + " NOT IN (" + l + "))", nil
	case OpIsNull:
		return x + " IS NULL", nil
	case OpNotNull:
		return x + " IS NOT NULL", nil
	case OpGreaterThan, OpGreaterThanOrEqual, OpLessThan, OpLessThanOrEqual:
		if err := need(1); err != nil {
			return "", err
		}
		return x + " " + comparison[r.Operator] + " " + lit(r.Values[0]), nil
	case OpInBetween:
		if err := need(2); err != nil {
			return "", err
		}
		return "(" + x + " >= " + lit(r.Values[0]) + " AND " + x + " <= " + lit(r.Values[1]) + ")", nil
	case OpStartsWith, OpEndsWith, OpInclude:
		if len(r.Values) == 0 {
			return "", fmt.Errorf("filter on %s: operator %s needs at least one value", r.Field.ID, r.Operator)
		}
		parts := make([]string, len(r.Values))
		for i, v := range r.Values {
			s, ok := v.(string)
			if !ok {
				return "", fmt.Errorf("filter on %s: operator %s takes strings, got %T", r.Field.ID, r.Operator, v)
			}
			p := likeEscape(s)
			switch r.Operator {
			case OpStartsWith:
				p += "%"
			case OpEndsWith:
				p = "%" + p
			default:
				p = "%" + p + "%"
			}
			parts[i] = x + " LIKE " + stringLiteral(d, p) + " ESCAPE '!'"
		}
		if len(parts) == 1 {
			return parts[0], nil
		}
		return "(" + strings.Join(parts, " OR ") + ")", nil
	}
	return "", fmt.Errorf("filter on %s: unsupported operator %q", r.Field.ID, r.Operator)
}

var comparison = map[FilterOperator]string{
	OpGreaterThan: ">", OpGreaterThanOrEqual: ">=", OpLessThan: "<", OpLessThanOrEqual: "<=",
}

func likeEscape(s string) string {
	return strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`).Replace(s)
}

// ruleLiteral renders a rule value for its field: a time value compared
// with a timestamp result is always a TIMESTAMP literal, so both dialects
// compare timestamps with timestamps.
func ruleLiteral(d Dialect, f Field, v any) string {
	if t, ok := v.(time.Time); ok && f.Dim != nil && DimResultType(f.Dim, f.Grain) == DimTimestamp {
		return timestampLiteral(t)
	}
	return Literal(d, v)
}

// OrderLimitSQL is the ORDER BY and LIMIT that Compile puts around its
// grouped query, over output columns named by field id; package preagg
// uses it so a rewritten query orders and cuts rows exactly alike. Without
// sorts the first metric orders descending, else the first dimension
// ascending (Lightdash's default); every dimension not yet sorted follows
// as a tie-break, so LIMIT picks the same rows on every path. NULLs sort
// last in both directions, and PostgreSQL compares strings with COLLATE
// "C" (code point order, as DuckDB does).
func OrderLimitSQL(d Dialect, r *Resolved) string {
	sorts := r.Sorts
	if len(sorts) == 0 {
		switch {
		case len(r.Metrics) > 0:
			sorts = []ResolvedSort{{Field: r.Metrics[0], Descending: true}}
		case len(r.Dimensions) > 0:
			sorts = []ResolvedSort{{Field: r.Dimensions[0]}}
		}
	}
	seen := map[string]bool{}
	var parts []string
	add := func(s ResolvedSort) {
		if seen[s.Field.ID] {
			return
		}
		seen[s.Field.ID] = true
		c := QuoteIdent(s.Field.ID)
		if d == Postgres && s.Field.Dim != nil && s.Field.Dim.Type == DimString {
			c = "CAST(" + c + ` AS TEXT) COLLATE "C"`
		}
		dir := " ASC NULLS LAST"
		if s.Descending {
			dir = " DESC NULLS LAST"
		}
		parts = append(parts, c+dir)
	}
	for _, s := range sorts {
		add(s)
	}
	for _, f := range r.Dimensions {
		add(ResolvedSort{Field: f})
	}
	limit := r.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	out := ""
	if len(parts) > 0 {
		out = "ORDER BY " + strings.Join(parts, ", ") + "\n"
	}
	return out + "LIMIT " + strconv.Itoa(limit)
}
