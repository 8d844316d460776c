package preagg

import (
	"fmt"
	"strings"

	"github.com/millrace/millrace/internal/semantic"
)

// Rewrite is the DuckDB SQL that answers r from p's materialization,
// registered as the view View. Its result has Compile's columns (field
// ids, in order, of the same types), rows and order: dimensions are
// re-bucketed with semantic.DimExpr over the stored columns, metrics
// re-aggregated (sum of sums and counts, min of mins, max of maxes, an
// average as its summed sum over its summed count, NULL when that is 0);
// a non-additive metric is read as stored, one stored row per result row
// (Match allowed it only then). WHERE conjuncts that p's filters imply are
// dropped (they hold on every stored row); the rest, and HAVING, apply as
// on the warehouse; ORDER BY and LIMIT are semantic.OrderLimitSQL's.
// It refuses a pre-aggregate that does not answer r.
func Rewrite(r *semantic.Resolved, p *semantic.PreAggregate) (string, error) {
	a := analyze(r, p)
	if a.reason != nil {
		return "", fmt.Errorf("pre-aggregate %s cannot answer this query: %s: %s", p.Name, a.reason.Code, a.reason.Message)
	}
	return rewrite(r, p, a)
}

// rewrite renders the SQL whatever the analysis said; tests use it to show
// that what Match rejects would indeed be wrong.
func rewrite(r *semantic.Resolved, p *semantic.PreAggregate, a analysis) (string, error) {
	const d = semantic.DuckDB
	m := r.Model

	dimSQL := func(f semantic.Field) string {
		g, _ := dimStored(p, f.Dim)
		col := dimColumn(f.Dim.Name)
		if g != "" {
			col = timeColumn(f.Dim.Name, g)
			if f.Grain == "" {
				// A raw time filter Match allowed (on a bucket boundary,
				// the bucket compares like the value), or a date's raw
				// value from day buckets (the same DATE).
				return semantic.QuoteIdent(col)
			}
		}
		stored := semantic.Dimension{Name: col, Type: f.Dim.Type}
		return semantic.DimExpr(d, m, &stored, f.Grain)
	}
	metricSQL := func(f semantic.Field) string {
		met := f.Metric
		if !met.Type.Additive() {
			// Exact match: one stored row per group.
			return "min(" + semantic.QuoteIdent(metricColumn(met.Name, "value")) + ")"
		}
		q := func(component string) string { return semantic.QuoteIdent(metricColumn(met.Name, component)) }
		switch met.Type {
		case semantic.MetricCount:
			// A count over no rows is 0, not NULL (no dimensions, nothing stored).
			return "CAST(coalesce(sum(" + q("count") + "), 0) AS BIGINT)"
		case semantic.MetricSum:
			return "sum(" + q("sum") + ")"
		case semantic.MetricMin:
			return "min(" + q("min") + ")"
		case semantic.MetricMax:
			return "max(" + q("max") + ")"
		}
		// average
		return "CAST(sum(" + q("sum") + ") AS DOUBLE PRECISION) / CAST(nullif(sum(" + q("count") + "), 0) AS DOUBLE PRECISION)"
	}
	fieldSQL := func(f semantic.Field) string {
		if f.Dim != nil {
			return dimSQL(f)
		}
		return metricSQL(f)
	}

	var sel []string
	for _, f := range r.Dimensions {
		sel = append(sel, dimSQL(f)+" AS "+semantic.QuoteIdent(f.ID))
	}
	for _, f := range r.Metrics {
		sel = append(sel, metricSQL(f)+" AS "+semantic.QuoteIdent(f.ID))
	}
	var b strings.Builder
	b.WriteString("SELECT * FROM (\nSELECT ")
	b.WriteString(strings.Join(sel, ",\n  "))
	b.WriteString("\nFROM ")
	b.WriteString(semantic.QuoteIdent(View))
	if a.where != nil {
		w, err := semantic.CondSQL(d, a.where, fieldSQL)
		if err != nil {
			return "", err
		}
		b.WriteString("\nWHERE ")
		b.WriteString(w)
	}
	b.WriteString(semantic.GroupBySQL(len(r.Dimensions)))
	if r.Having != nil {
		h, err := semantic.CondSQL(d, r.Having, fieldSQL)
		if err != nil {
			return "", err
		}
		b.WriteString("\nHAVING ")
		b.WriteString(h)
	}
	b.WriteString("\n) AS q\n")
	b.WriteString(semantic.OrderLimitSQL(d, r))
	return b.String(), nil
}
