//go:build cgo

package preagg_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/millrace/millrace/internal/semantic"
)

// genQueries makes n random metric queries over m (deterministic). Most
// are shaped after one pre-aggregate (a subset of its fields, grains it
// may or may not derive, its scope filters kept, narrowed or dropped,
// extra filters, HAVING, sorts, small limits) so that hits and near
// misses are both common; the rest pick fields anywhere in the model.
func genQueries(m *semantic.Model, n int) []semantic.MetricQuery {
	g := &qgen{r: rand.New(rand.NewPCG(diffSeed, 2)), m: m}
	out := make([]semantic.MetricQuery, 0, n)
	for len(out) < n {
		var q semantic.MetricQuery
		if g.r.IntN(100) < 80 {
			// The pre-aggregates with more rules to get wrong come up more.
			q = g.shaped(m.PreAggregate(pick(g.r, []string{"by_day", "by_week", "by_week", "by_month", "shipped_scope", "shipped_scope", "shipped_scope",
				"exact_month", "exact_month", "ship_day", "gift_priority", "by_hour", "by_quarter"})))
		} else {
			q = g.anywhere()
		}
		if len(q.Dimensions)+len(q.Metrics) == 0 {
			continue
		}
		g.finish(&q)
		out = append(out, q)
	}
	return out
}

type qgen struct {
	r *rand.Rand
	m *semantic.Model
}

func (g *qgen) id(name string, grain semantic.Grain) string {
	return semantic.FieldID(g.m.Name, name, grain)
}

func (g *qgen) chance(pct int) bool { return g.r.IntN(100) < pct }

// grainFor picks a grain for a time dimension stored at stored: mostly
// one it derives, sometimes any (or the raw value).
func (g *qgen) grainFor(d *semantic.Dimension, stored semantic.Grain) semantic.Grain {
	grains := semantic.DimGrains(d)
	switch x := g.r.IntN(10); {
	case x < 4 && stored != "":
		return stored
	case x < 8 && stored != "":
		var ok []semantic.Grain
		for _, gr := range grains {
			if stored.Derives(gr) {
				ok = append(ok, gr)
			}
		}
		return pick(g.r, ok)
	case x == 9:
		return ""
	}
	return pick(g.r, grains)
}

func (g *qgen) shaped(p *semantic.PreAggregate) semantic.MetricQuery {
	q := semantic.MetricQuery{ExploreName: g.m.Name}
	for _, name := range p.Dimensions {
		if g.chance(50) {
			gr := semantic.Grain("")
			if d := g.m.Dimension(name); d.Type.IsTime() {
				gr = g.grainFor(d, "") // stored raw: every grain derives
			}
			q.Dimensions = append(q.Dimensions, g.id(name, gr))
		}
	}
	if p.TimeDimension != "" && g.chance(70) {
		td := g.m.Dimension(p.TimeDimension)
		q.Dimensions = append(q.Dimensions, g.id(td.Name, g.grainFor(td, p.Granularity)))
	}
	// Non-additive pre-aggregates: often ask exactly their dimensions.
	if g.hasNonAdditive(p) && g.chance(50) {
		q.Dimensions = nil
		for _, d := range p.Dimensions {
			q.Dimensions = append(q.Dimensions, g.id(d, ""))
		}
		if p.TimeDimension != "" {
			q.Dimensions = append(q.Dimensions, g.id(p.TimeDimension, p.Granularity))
		}
	}
	g.r.Shuffle(len(q.Dimensions), func(i, j int) { q.Dimensions[i], q.Dimensions[j] = q.Dimensions[j], q.Dimensions[i] })
	mets := slices.Clone(p.Metrics)
	g.r.Shuffle(len(mets), func(i, j int) { mets[i], mets[j] = mets[j], mets[i] })
	k := 1 + g.r.IntN(min(3, len(mets)))
	if len(q.Dimensions) > 0 && g.chance(8) {
		k = 0
	}
	for _, name := range mets[:k] {
		q.Metrics = append(q.Metrics, g.id(name, ""))
	}

	var rules []semantic.FilterItem
	if len(p.Filters) > 0 && g.chance(85) {
		for _, f := range p.Filters {
			rules = append(rules, g.scopeVariant(f))
		}
	}
	stored := slices.Clone(p.Dimensions)
	if p.TimeDimension != "" {
		stored = append(stored, p.TimeDimension)
	}
	for range g.r.IntN(3) {
		name := pick(g.r, stored)
		if g.chance(12) {
			name = pick(g.r, g.m.Dimensions).Name
		}
		rules = append(rules, g.rule(g.m.Dimension(name), p))
	}
	g.addFilters(&q, rules)
	return q
}

func (g *qgen) hasNonAdditive(p *semantic.PreAggregate) bool {
	for _, name := range p.Metrics {
		if !g.m.Metric(name).Type.Additive() {
			return true
		}
	}
	return false
}

func (g *qgen) anywhere() semantic.MetricQuery {
	q := semantic.MetricQuery{ExploreName: g.m.Name}
	for _, i := range g.r.Perm(len(g.m.Dimensions))[:g.r.IntN(4)] {
		d := &g.m.Dimensions[i]
		gr := semantic.Grain("")
		if d.Type.IsTime() {
			gr = g.grainFor(d, "")
		}
		q.Dimensions = append(q.Dimensions, g.id(d.Name, gr))
	}
	for _, i := range g.r.Perm(len(g.m.Metrics))[:1+g.r.IntN(3)] {
		q.Metrics = append(q.Metrics, g.id(g.m.Metrics[i].Name, ""))
	}
	var rules []semantic.FilterItem
	for range g.r.IntN(3) {
		rules = append(rules, g.rule(&g.m.Dimensions[g.r.IntN(len(g.m.Dimensions))], nil))
	}
	g.addFilters(&q, rules)
	return q
}

func (g *qgen) addFilters(q *semantic.MetricQuery, rules []semantic.FilterItem) {
	if len(rules) >= 2 && g.chance(15) {
		// Two of them or-ed, the rest and-ed.
		or := semantic.FilterItem{Or: rules[:2]}
		rules = append([]semantic.FilterItem{or}, rules[2:]...)
	}
	if len(rules) > 0 {
		q.Filters.Dimensions = &semantic.FilterGroup{And: rules}
	}
}

// finish adds HAVING, sorts, a limit and, rarely, a custom SQL metric.
func (g *qgen) finish(q *semantic.MetricQuery) {
	if g.chance(3) {
		q.AdditionalMetrics = []semantic.AdditionalMetric{{Name: "amount_x2", Type: semantic.MetricSum, SQL: "amount * 2"}}
		q.Metrics = append(q.Metrics, g.id("amount_x2", ""))
	}
	if len(q.Metrics) > 0 && g.chance(20) {
		name := q.Metrics[g.r.IntN(len(q.Metrics))]
		if name != g.id("amount_x2", "") {
			met := g.m.Metric(name[len(g.m.Name)+1:])
			q.Filters.Metrics = &semantic.FilterGroup{And: []semantic.FilterItem{{FilterRule: semantic.FilterRule{
				Target: semantic.FilterTarget{FieldID: name}, Operator: pick(g.r, []semantic.FilterOperator{semantic.OpGreaterThan, semantic.OpLessThanOrEqual}),
				Values: []any{g.threshold(met)}}}}}
		}
	}
	if g.chance(55) {
		fields := append(slices.Clone(q.Dimensions), q.Metrics...)
		for _, i := range g.r.Perm(len(fields))[:1+g.r.IntN(min(2, len(fields)))] {
			q.Sorts = append(q.Sorts, semantic.Sort{FieldID: fields[i], Descending: g.chance(50)})
		}
	}
	q.Limit = pick(g.r, []int{0, 1, 3, 10, 25, 100, 5000})
}

func (g *qgen) threshold(met *semantic.Metric) float64 {
	switch met.Type {
	case semantic.MetricCount, semantic.MetricCountDistinct:
		return float64(g.r.IntN(6))
	case semantic.MetricSum:
		return float64(g.r.IntN(3000))
	}
	return float64(g.r.IntN(300) - 20)
}

// scopeVariant is a pre-aggregate filter as a query states it: equal, or
// narrower, or (rarely) wider.
func (g *qgen) scopeVariant(f semantic.FilterRule) semantic.FilterItem {
	it := semantic.FilterItem{FilterRule: semantic.FilterRule{Target: f.Target, Operator: f.Operator, Values: slices.Clone(f.Values)}}
	switch x := g.r.IntN(10); {
	case x < 5: // equal
	case x < 8: // narrower
		switch f.Operator {
		case semantic.OpEquals:
			it.Values = it.Values[:1]
		case semantic.OpGreaterThan:
			it.Values = []any{fmt.Sprint(f.Values[0]) + ".5"}
		}
	default: // wider
		switch f.Operator {
		case semantic.OpEquals:
			it.Values = append(it.Values, "returned")
		case semantic.OpGreaterThan:
			it.Operator = semantic.OpGreaterThanOrEqual
		}
	}
	return it
}

func (g *qgen) date() time.Time {
	return dataStart.Add(time.Duration(g.r.Int64N(int64(dataSpan/time.Hour))) * time.Hour)
}

// timeValue is a filter value on a time dimension: often on a boundary of
// p's grain (servable), sometimes a day, sometimes off any boundary.
func (g *qgen) timeValue(p *semantic.PreAggregate) string {
	t := g.date()
	switch x := g.r.IntN(10); {
	case x < 5 && p != nil && p.Granularity != "":
		return truncate(t, p.Granularity).Format(time.DateOnly)
	case x < 8:
		return truncate(t, semantic.GrainDay).Format(time.DateOnly)
	}
	return t.Format(time.RFC3339)
}

// truncate is date_trunc in UTC, written apart from preagg.Truncate so the
// generator does not share a mistake with the code under test.
func truncate(t time.Time, g semantic.Grain) time.Time {
	y, mo, d := t.UTC().Date()
	switch g {
	case semantic.GrainHour:
		return t.UTC().Truncate(time.Hour)
	case semantic.GrainWeek:
		for time.Date(y, mo, d, 0, 0, 0, 0, time.UTC).Weekday() != time.Monday {
			d--
		}
	case semantic.GrainMonth:
		d = 1
	case semantic.GrainQuarter:
		mo, d = mo-(mo-1)%3, 1
	case semantic.GrainYear:
		mo, d = 1, 1
	}
	return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
}

// rule is a random filter rule on d.
func (g *qgen) rule(d *semantic.Dimension, p *semantic.PreAggregate) semantic.FilterItem {
	rule := func(id string, op semantic.FilterOperator, vals ...any) semantic.FilterItem {
		return semantic.FilterItem{FilterRule: semantic.FilterRule{Target: semantic.FilterTarget{FieldID: id}, Operator: op, Values: vals}}
	}
	id := g.id(d.Name, "")
	switch d.Type {
	case semantic.DimString:
		dom := map[string][]string{"status": statuses, "country": countries, "channel": channels}[d.Name]
		switch g.r.IntN(7) {
		case 0:
			return rule(id, semantic.OpEquals, pick(g.r, dom))
		case 1:
			return rule(id, semantic.OpEquals, pick(g.r, dom), pick(g.r, dom))
		case 2:
			return rule(id, semantic.OpNotEquals, pick(g.r, dom))
		case 3:
			return rule(id, pick(g.r, []semantic.FilterOperator{semantic.OpIsNull, semantic.OpNotNull}))
		case 4:
			return rule(id, semantic.OpStartsWith, string([]rune(pick(g.r, dom))[:1]))
		case 5:
			return rule(id, semantic.OpInclude, "e")
		}
		return rule(id, semantic.OpEndsWith, "_shop")
	case semantic.DimBoolean:
		if g.chance(20) {
			return rule(id, semantic.OpIsNull)
		}
		return rule(id, semantic.OpEquals, g.chance(50))
	case semantic.DimNumber:
		v := float64(1 + g.r.IntN(5))
		switch g.r.IntN(5) {
		case 0:
			return rule(id, semantic.OpEquals, v)
		case 1:
			return rule(id, semantic.OpGreaterThanOrEqual, v)
		case 2:
			return rule(id, semantic.OpLessThan, v)
		case 3:
			return rule(id, semantic.OpInBetween, v, v+1)
		}
		return rule(id, semantic.OpNotNull)
	}
	// Time: the raw value, or at a grain.
	var stored semantic.Grain
	if p != nil && p.TimeDimension == d.Name {
		stored = p.Granularity
	}
	if g.chance(35) {
		gr := g.grainFor(d, stored)
		if gr != "" {
			gid := g.id(d.Name, gr)
			v := truncate(g.date(), gr)
			if gr == semantic.GrainHour {
				return rule(gid, semantic.OpGreaterThanOrEqual, v.Format(time.RFC3339))
			}
			switch g.r.IntN(3) {
			case 0:
				return rule(gid, semantic.OpEquals, v.Format(time.DateOnly))
			case 1:
				return rule(gid, semantic.OpLessThan, v.Format(time.DateOnly))
			}
			return rule(gid, semantic.OpGreaterThanOrEqual, v.Format(time.DateOnly))
		}
	}
	switch g.r.IntN(8) {
	case 0:
		return rule(id, semantic.OpNotNull)
	case 1:
		return rule(id, semantic.OpIsNull)
	case 2:
		return rule(id, semantic.OpGreaterThan, g.timeValue(p))
	case 3:
		a, b := g.timeValue(p), g.timeValue(p)
		return rule(id, semantic.OpInBetween, a, b)
	case 4, 5:
		return rule(id, semantic.OpLessThan, g.timeValue(p))
	}
	return rule(id, semantic.OpGreaterThanOrEqual, g.timeValue(p))
}
