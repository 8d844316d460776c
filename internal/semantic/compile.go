package semantic

import (
	"fmt"
	"strconv"
	"strings"
)

// Compile renders a resolved metric query as SQL for dialect d:
//
//	SELECT * FROM (
//	  SELECT <dimension AS "<field id>">..., <metric AS "<field id>">...
//	  FROM <table> AS t | (<sql>) AS t
//	  WHERE <dimension filters> GROUP BY 1, 2, ... HAVING <metric filters>
//	) AS q
//	ORDER BY ... LIMIT n
//
// The outer query orders by the result columns themselves (OrderLimitSQL),
// which package preagg's rewrite shares, so both paths cut the same rows.
func Compile(r *Resolved, d Dialect) (string, error) {
	if d != Postgres && d != DuckDB {
		return "", fmt.Errorf("unknown SQL dialect %q", d)
	}
	if r == nil || r.Model == nil {
		return "", fmt.Errorf("compile: no resolved query")
	}
	if len(r.Dimensions)+len(r.Metrics) == 0 {
		return "", fmt.Errorf("compile: the query has no fields")
	}
	m := r.Model
	var sel []string
	for _, f := range r.Dimensions {
		sel = append(sel, DimExpr(d, m, f.Dim, f.Grain)+" AS "+QuoteIdent(f.ID))
	}
	for _, f := range r.Metrics {
		sel = append(sel, FieldAggExpr(d, m, f)+" AS "+QuoteIdent(f.ID))
	}
	var b strings.Builder
	b.WriteString("SELECT * FROM (\nSELECT ")
	b.WriteString(strings.Join(sel, ",\n  "))
	b.WriteString("\nFROM ")
	b.WriteString(FromClause(m))
	if r.Where != nil {
		w, err := CondSQL(d, r.Where, func(f Field) string { return DimExpr(d, m, f.Dim, f.Grain) })
		if err != nil {
			return "", err
		}
		b.WriteString("\nWHERE ")
		b.WriteString(w)
	}
	b.WriteString(GroupBySQL(len(r.Dimensions)))
	if r.Having != nil {
		h, err := CondSQL(d, r.Having, func(f Field) string { return FieldAggExpr(d, m, f) })
		if err != nil {
			return "", err
		}
		b.WriteString("\nHAVING ")
		b.WriteString(h)
	}
	b.WriteString("\n) AS q\n")
	b.WriteString(OrderLimitSQL(d, r))
	return b.String(), nil
}

// FieldAggExpr is MetricAggExpr for a metric field of a query: a model
// metric or a custom one.
func FieldAggExpr(d Dialect, m *Model, f Field) string {
	if f.Custom != nil {
		return MetricAggExpr(d, m, &Metric{Name: f.Custom.Name, Type: f.Custom.Type, SQL: f.Custom.SQL})
	}
	return MetricAggExpr(d, m, f.Metric)
}

// GroupBySQL groups by the first n output columns (the dimensions, which
// every compiled query selects first), or is empty without dimensions.
func GroupBySQL(n int) string {
	if n == 0 {
		return ""
	}
	ords := make([]string, n)
	for i := range ords {
		ords[i] = strconv.Itoa(i + 1)
	}
	return "\nGROUP BY " + strings.Join(ords, ", ")
}
