package preagg

import (
	"fmt"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

// analysis is what Match and Rewrite both need to know about a query on
// one pre-aggregate. Rewrite refuses a pre-aggregate that does not pass
// it, so a caller cannot rewrite onto a pre-aggregate Match would reject.
type analysis struct {
	p      *semantic.PreAggregate
	passed int              // checks passed before the failing one
	reason *api.MissReason  // nil: checkFields..checkScope all pass
	where  *semantic.Cond   // the WHERE to apply on the view: the query's, minus conjuncts its scope implies
	scope  []*semantic.Rule // its filters, resolved
}

func analyze(r *semantic.Resolved, p *semantic.PreAggregate) analysis {
	a := analysis{p: p}
	scope, err := scopeRules(r.Model, p)
	if err != nil {
		// Refused at load; a definition that slipped through never serves.
		a.reason = missFor(p, api.PreAggMissFilterScope, "", fmt.Sprintf("pre-aggregate %s's filters cannot be read: %v", p.Name, err))
		return a
	}
	a.scope = scope

	// A conjunct of the query's WHERE that the scope implies holds on
	// every stored row: it needs no re-applying, nor its field stored.
	all := conjuncts(r.Where)
	var kept []*semantic.Cond
	for _, c := range all {
		if c.Rule != nil && impliedByAny(scope, c.Rule) {
			continue
		}
		kept = append(kept, c)
	}
	if len(kept) > 0 {
		a.where = &semantic.Cond{Items: kept}
	}
	whereRules := leaves(a.where)
	havingRules := leaves(r.Having)

	// checkFields: every dimension, metric and filter field is stored.
	for _, f := range r.Dimensions {
		if _, ok := dimStored(p, f.Dim); !ok {
			a.reason = missFor(p, api.PreAggMissFieldNotCovered, f.ID, fmt.Sprintf("dimension %s is not in pre-aggregate %s", f.ID, p.Name))
			return a
		}
	}
	for _, f := range r.Metrics {
		if f.Metric == nil || !metricStored(p, f.Metric.Name) {
			a.reason = missFor(p, api.PreAggMissFieldNotCovered, f.ID, fmt.Sprintf("metric %s is not in pre-aggregate %s", f.ID, p.Name))
			return a
		}
	}
	for _, rules := range [][]*semantic.Rule{whereRules, havingRules} {
		for _, rule := range rules {
			f := rule.Field
			ok := false
			switch {
			case f.Dim != nil:
				_, ok = dimStored(p, f.Dim)
			case f.Metric != nil:
				ok = metricStored(p, f.Metric.Name)
			}
			if !ok {
				a.reason = missFor(p, api.PreAggMissFieldNotCovered, f.ID, fmt.Sprintf("filter field %s is not in pre-aggregate %s", f.ID, p.Name))
				return a
			}
		}
	}
	a.passed = checkGrain

	// checkGrain: a time field is derivable from the grain it is stored at.
	for _, f := range r.Dimensions {
		g, _ := dimStored(p, f.Dim)
		if g == "" {
			continue // stored raw: every grain derives
		}
		qg := queryGrain(f)
		if qg == "" {
			a.reason = missFor(p, api.PreAggMissGrain, f.ID, fmt.Sprintf("%s asks for raw %s values; pre-aggregate %s stores them by %s", f.ID, f.Dim.Name, p.Name, g))
			return a
		}
		if !g.Derives(qg) {
			a.reason = missFor(p, api.PreAggMissGrain, f.ID, grainMessage(f, g, p))
			return a
		}
	}
	for _, rule := range whereRules {
		f := rule.Field
		if f.Dim == nil {
			continue
		}
		g, _ := dimStored(p, f.Dim)
		if g == "" {
			continue
		}
		qg := queryGrain(f)
		if f.Grain == "" && (qg == "" || !g.Derives(qg)) {
			if !rawTimeFilterServable(rule, g) {
				a.reason = missFor(p, api.PreAggMissGrain, f.ID, fmt.Sprintf("the filter %s %s on raw %s needs row-level time; pre-aggregate %s stores it by %s (only greaterThanOrEqual/lessThan a %s boundary, isNull and notNull can be answered)", f.ID, rule.Operator, f.Dim.Name, p.Name, g, g))
				return a
			}
			continue
		}
		if !g.Derives(qg) {
			a.reason = missFor(p, api.PreAggMissGrain, f.ID, grainMessage(f, g, p))
			return a
		}
	}
	a.passed = checkExact

	// checkExact: count_distinct, median and percentiles cannot be
	// re-aggregated; the query must group by exactly its dimensions at
	// its grain, so that each stored row is one result row.
	var nonAdditive *semantic.Field
	for i := range r.Metrics {
		if f := &r.Metrics[i]; !f.Metric.Type.Additive() {
			nonAdditive = f
			break
		}
	}
	if nonAdditive == nil {
		for _, rule := range havingRules {
			if f := &rule.Field; f.Metric != nil && !f.Metric.Type.Additive() {
				nonAdditive = f
				break
			}
		}
	}
	if nonAdditive != nil {
		if !sameDimensions(r, p) {
			a.reason = missFor(p, api.PreAggMissNonAdditive, nonAdditive.ID, fmt.Sprintf("%s is a %s metric: it cannot be re-aggregated, so the query must group by exactly pre-aggregate %s's dimensions (%s) at its grain", nonAdditive.ID, nonAdditive.Metric.Type, p.Name, describeDims(p)))
			return a
		}
	}
	a.passed = checkScope

	// checkScope: each of its filters is implied by a conjunct of the
	// query's WHERE (equal or narrower, same operator class).
	for _, f := range scope {
		ok := false
		for _, c := range all {
			if c.Rule != nil && implies(c.Rule, f) {
				ok = true
				break
			}
		}
		if !ok {
			a.reason = missFor(p, api.PreAggMissFilterScope, f.Field.ID, fmt.Sprintf("pre-aggregate %s holds only rows where %s; the query's filters are not equal to or narrower than that", p.Name, describeRule(f)))
			return a
		}
	}
	a.passed = checkBuild
	return a
}

// queryGrain is the grain a field asks for, with a date dimension's raw
// value read as its day: semantic.DimExpr gives the same DATE for both.
func queryGrain(f semantic.Field) semantic.Grain {
	if f.Grain == "" && f.Dim != nil && f.Dim.Type == semantic.DimDate {
		return semantic.GrainDay
	}
	return f.Grain
}

func grainMessage(f semantic.Field, g semantic.Grain, p *semantic.PreAggregate) string {
	msg := fmt.Sprintf("%s cannot be derived from pre-aggregate %s's %s buckets", f.ID, p.Name, g)
	if g == semantic.GrainWeek {
		msg += " (a week straddles months, quarters and years)"
	}
	return msg
}

// dimStored reports whether p stores dimension d and at which grain ("":
// the raw value).
func dimStored(p *semantic.PreAggregate, d *semantic.Dimension) (semantic.Grain, bool) {
	if d == nil {
		return "", false
	}
	if p.TimeDimension != "" && d.Name == p.TimeDimension {
		return p.Granularity, true
	}
	for _, n := range p.Dimensions {
		if n == d.Name {
			return "", true
		}
	}
	return "", false
}

func metricStored(p *semantic.PreAggregate, name string) bool {
	for _, n := range p.Metrics {
		if n == name {
			return true
		}
	}
	return false
}

type dimKey struct {
	name  string
	grain semantic.Grain
}

// sameDimensions reports whether r groups by exactly p's dimensions, its
// time dimension at its granularity.
func sameDimensions(r *semantic.Resolved, p *semantic.PreAggregate) bool {
	want := map[dimKey]bool{}
	for _, n := range p.Dimensions {
		d := r.Model.Dimension(n)
		if d == nil {
			return false
		}
		want[dimKey{n, queryGrain(semantic.Field{Dim: d})}] = true
	}
	if p.TimeDimension != "" {
		want[dimKey{p.TimeDimension, p.Granularity}] = true
	}
	got := map[dimKey]bool{}
	for _, f := range r.Dimensions {
		k := dimKey{f.Dim.Name, queryGrain(f)}
		if !want[k] {
			return false
		}
		got[k] = true
	}
	return len(got) == len(want)
}

func describeDims(p *semantic.PreAggregate) string {
	s := ""
	for _, n := range p.Dimensions {
		if s != "" {
			s += ", "
		}
		s += n
	}
	if p.TimeDimension != "" {
		if s != "" {
			s += ", "
		}
		s += p.TimeDimension + " by " + string(p.Granularity)
	}
	if s == "" {
		return "none"
	}
	return s
}

// conjuncts splits a WHERE into the conditions and-ed at its top.
func conjuncts(c *semantic.Cond) []*semantic.Cond {
	if c == nil {
		return nil
	}
	if c.Rule != nil {
		return []*semantic.Cond{c}
	}
	if c.Or {
		if len(c.Items) == 1 {
			return conjuncts(c.Items[0])
		}
		return []*semantic.Cond{c}
	}
	var out []*semantic.Cond
	for _, it := range c.Items {
		out = append(out, conjuncts(it)...)
	}
	return out
}

// leaves lists every rule in a filter tree.
func leaves(c *semantic.Cond) []*semantic.Rule {
	if c == nil {
		return nil
	}
	if c.Rule != nil {
		return []*semantic.Rule{c.Rule}
	}
	var out []*semantic.Rule
	for _, it := range c.Items {
		out = append(out, leaves(it)...)
	}
	return out
}
