package preagg

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

// Column naming of a materialization. Prefixes keep every name distinct
// whatever the model's names are (a component name is never the suffix of
// another, so "m_<a>__<x>" cannot equal "m_<b>__<y>" unless a=b, x=y):
//
//	d_<dimension>              a dimension's raw value (semantic.DimExpr at no grain)
//	t_<grain>_<dimension>      the time dimension at the granularity
//	m_<metric>__count          count, and average's count of non-null values
//	m_<metric>__sum            sum, and average's sum
//	m_<metric>__min, __max     min, max
//	m_<metric>__value          count_distinct, median, percentile: the exact value
//	partition_key              the partition's start date (partitioned builds;
//	                           the engine drops it into object keys), never
//	                           NULL: rows without a time are in NullPartitionKey
const PartitionColumn = "partition_key"

// NullPartitionKey is the partition of rows whose time is NULL: the
// oldest date, so it sorts before every window and only a full build
// rebuilds it.
const NullPartitionKey = "0001-01-01"

var nullPartition = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)

func dimColumn(name string) string { return "d_" + name }

func timeColumn(name string, g semantic.Grain) string { return "t_" + string(g) + "_" + name }

func metricColumn(name, component string) string { return "m_" + name + "__" + component }

// component is one stored column of a metric: its name and its aggregate
// over source rows.
type component struct {
	col string
	agg string
}

// components lists what p stores for met, in dialect d.
func components(d semantic.Dialect, m *semantic.Model, met *semantic.Metric) []component {
	switch met.Type {
	case semantic.MetricCount:
		return []component{{metricColumn(met.Name, "count"), semantic.MetricAggExpr(d, m, met)}}
	case semantic.MetricSum:
		return []component{{metricColumn(met.Name, "sum"), semantic.MetricAggExpr(d, m, met)}}
	case semantic.MetricMin:
		return []component{{metricColumn(met.Name, "min"), semantic.MetricAggExpr(d, m, met)}}
	case semantic.MetricMax:
		return []component{{metricColumn(met.Name, "max"), semantic.MetricAggExpr(d, m, met)}}
	case semantic.MetricAverage:
		// The average's argument, named explicitly: a count with no SQL
		// would be count(*), which counts the NULLs avg skips.
		arg := met.SQL
		if arg == "" {
			arg = semantic.QuoteIdent(met.Name)
		}
		sum := semantic.Metric{Name: met.Name, Type: semantic.MetricSum, SQL: arg}
		cnt := semantic.Metric{Name: met.Name, Type: semantic.MetricCount, SQL: arg}
		return []component{
			{metricColumn(met.Name, "sum"), semantic.MetricAggExpr(d, m, &sum)},
			{metricColumn(met.Name, "count"), semantic.MetricAggExpr(d, m, &cnt)},
		}
	}
	return []component{{metricColumn(met.Name, "value"), semantic.MetricAggExpr(d, m, met)}}
}

// Plan is the warehouse SQL (dialect d) whose rows are p's
// materialization: grouped by its dimensions and its time dimension at
// its granularity, its filters applied, each metric as its components
// (see the column naming above). A partitioned pre-aggregate
// (refresh.partition_by) gets PartitionColumn, and from, when set, keeps
// only rows whose time is at or after it (a window start from
// WindowStart: partition-aligned, so whole partitions are rebuilt).
func Plan(m *semantic.Model, p *semantic.PreAggregate, d semantic.Dialect, from *time.Time) (api.BuildPlan, error) {
	var sel []string
	for _, name := range p.Dimensions {
		dim := m.Dimension(name)
		if dim == nil {
			return api.BuildPlan{}, fmt.Errorf("pre-aggregate %s: no dimension %q in model %s", p.Name, name, m.Name)
		}
		sel = append(sel, semantic.DimExpr(d, m, dim, "")+" AS "+semantic.QuoteIdent(dimColumn(name)))
	}
	var tdim *semantic.Dimension
	if p.TimeDimension != "" {
		tdim = m.Dimension(p.TimeDimension)
		if tdim == nil || !tdim.Type.IsTime() || !p.Granularity.Valid() {
			return api.BuildPlan{}, fmt.Errorf("pre-aggregate %s: time dimension %q is not a date or timestamp dimension of model %s at a valid granularity", p.Name, p.TimeDimension, m.Name)
		}
		sel = append(sel, semantic.DimExpr(d, m, tdim, p.Granularity)+" AS "+semantic.QuoteIdent(timeColumn(tdim.Name, p.Granularity)))
	}
	plan := api.BuildPlan{}
	if pb := p.Refresh.PartitionBy; pb != "" {
		if tdim == nil || !p.Granularity.Derives(pb) {
			return api.BuildPlan{}, fmt.Errorf("pre-aggregate %s: partition_by %s needs a time dimension whose granularity derives it", p.Name, pb)
		}
		// Rows without a time go to the oldest partition, never to a NULL
		// one: every object has a date key, and a partial refresh (which
		// rebuilds only keys >= its window start) keeps them.
		sel = append(sel, "coalesce("+semantic.DimExpr(d, m, tdim, pb)+", "+semantic.Literal(d, nullPartition)+") AS "+semantic.QuoteIdent(PartitionColumn))
		plan.PartitionColumn = PartitionColumn
	}
	groups := len(sel)
	for _, name := range p.Metrics {
		met := m.Metric(name)
		if met == nil {
			return api.BuildPlan{}, fmt.Errorf("pre-aggregate %s: no metric %q in model %s", p.Name, name, m.Name)
		}
		for _, c := range components(d, m, met) {
			sel = append(sel, c.agg+" AS "+semantic.QuoteIdent(c.col))
		}
	}
	scope, err := semantic.ScopeCond(m, p)
	if err != nil {
		return api.BuildPlan{}, err
	}
	where := scope
	if from != nil {
		if tdim == nil {
			return api.BuildPlan{}, fmt.Errorf("pre-aggregate %s: a window start needs a time dimension", p.Name)
		}
		since := &semantic.Cond{Rule: &semantic.Rule{
			Field:    semantic.Field{ID: semantic.FieldID(m.Name, tdim.Name, ""), Dim: tdim},
			Operator: semantic.OpGreaterThanOrEqual,
			Values:   []any{from.UTC()},
		}}
		if where == nil {
			where = since
		} else {
			where = &semantic.Cond{Items: []*semantic.Cond{where, since}}
		}
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	b.WriteString(strings.Join(sel, ",\n  "))
	b.WriteString("\nFROM ")
	b.WriteString(semantic.FromClause(m))
	if where != nil {
		w, err := semantic.CondSQL(d, where, func(f semantic.Field) string { return semantic.DimExpr(d, m, f.Dim, f.Grain) })
		if err != nil {
			return api.BuildPlan{}, err
		}
		b.WriteString("\nWHERE ")
		b.WriteString(w)
	}
	if groups > 0 {
		ords := make([]string, groups)
		for i := range ords {
			ords[i] = strconv.Itoa(i + 1)
		}
		b.WriteString("\nGROUP BY ")
		b.WriteString(strings.Join(ords, ", "))
	}
	plan.SQL = b.String()
	return plan, nil
}
