package preagg

import (
	"fmt"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/semantic"
)

// implies reports whether every row r accepts is accepted by f: r is
// equal to or narrower than f. Only rules on the same field at the same
// grain and of the same operator class compare; anything else is "no",
// which costs a miss, never a wrong answer.
func implies(r, f *semantic.Rule) bool {
	if r.Field.Dim == nil || f.Field.Dim == nil || r.Field.Dim.Name != f.Field.Dim.Name || r.Field.Grain != f.Field.Grain {
		return false
	}
	switch f.Operator {
	case semantic.OpEquals:
		// x IN (r) ⊆ x IN (f) when r's values are among f's.
		return r.Operator == semantic.OpEquals && len(r.Values) > 0 && subset(r.Values, f.Values)
	case semantic.OpNotEquals:
		// x NOT IN (r) ⊆ x NOT IN (f) when r excludes at least f's values
		// (nulls are treated alike by both, whatever the rendering).
		return r.Operator == semantic.OpNotEquals && len(f.Values) > 0 && subset(f.Values, r.Values)
	case semantic.OpIsNull, semantic.OpNotNull:
		return r.Operator == f.Operator
	case semantic.OpStartsWith, semantic.OpEndsWith, semantic.OpInclude:
		return r.Operator == f.Operator && len(r.Values) > 0 && subset(r.Values, f.Values) && subset(f.Values, r.Values)
	}
	ri, ok1 := interval(r)
	fi, ok2 := interval(f)
	return ok1 && ok2 && fi.contains(ri)
}

func impliedByAny(scope []*semantic.Rule, r *semantic.Rule) bool {
	for _, f := range scope {
		if implies(f, r) {
			return true
		}
	}
	return false
}

// bound is one end of a range over numbers or times.
type bound struct {
	set  bool
	v    any // float64 or time.Time
	incl bool
}

type span struct{ lo, hi bound }

// interval reads a range rule (greaterThan, …, inBetween inclusive) over
// numbers or times. Strings are left out: their order is the warehouse's
// collation, not Go's.
func interval(r *semantic.Rule) (span, bool) {
	for _, v := range r.Values {
		switch v.(type) {
		case float64, time.Time:
		default:
			return span{}, false
		}
	}
	one := func() (any, bool) {
		if len(r.Values) != 1 {
			return nil, false
		}
		return r.Values[0], true
	}
	switch r.Operator {
	case semantic.OpGreaterThan, semantic.OpGreaterThanOrEqual:
		v, ok := one()
		return span{lo: bound{true, v, r.Operator == semantic.OpGreaterThanOrEqual}}, ok
	case semantic.OpLessThan, semantic.OpLessThanOrEqual:
		v, ok := one()
		return span{hi: bound{true, v, r.Operator == semantic.OpLessThanOrEqual}}, ok
	case semantic.OpInBetween:
		if len(r.Values) != 2 {
			return span{}, false
		}
		return span{lo: bound{true, r.Values[0], true}, hi: bound{true, r.Values[1], true}}, true
	}
	return span{}, false
}

// contains reports whether s ⊇ o.
func (s span) contains(o span) bool {
	if s.lo.set {
		if !o.lo.set {
			return false
		}
		c, ok := compare(o.lo.v, s.lo.v)
		if !ok || c < 0 || (c == 0 && o.lo.incl && !s.lo.incl) {
			return false
		}
	}
	if s.hi.set {
		if !o.hi.set {
			return false
		}
		c, ok := compare(o.hi.v, s.hi.v)
		if !ok || c > 0 || (c == 0 && o.hi.incl && !s.hi.incl) {
			return false
		}
	}
	return true
}

func compare(a, b any) (int, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, x == y // NaN compares with nothing
	case time.Time:
		y, ok := b.(time.Time)
		if !ok {
			return 0, false
		}
		return x.Compare(y), true
	}
	return 0, false
}

func valueEqual(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	}
	c, ok := compare(a, b)
	return ok && c == 0
}

// subset reports whether every value of a is in b.
func subset(a, b []any) bool {
	for _, x := range a {
		found := false
		for _, y := range b {
			if valueEqual(x, y) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// rawTimeFilterServable reports whether a filter on a time dimension's raw
// value can be answered from its buckets at grain g: for a bucket boundary
// b, ts >= b ⇔ bucket(ts) >= b and ts < b ⇔ bucket(ts) < b; a bucket is
// null exactly when its value is. Anything else needs row-level time.
func rawTimeFilterServable(rule *semantic.Rule, g semantic.Grain) bool {
	switch rule.Operator {
	case semantic.OpIsNull, semantic.OpNotNull:
		return true
	case semantic.OpGreaterThanOrEqual, semantic.OpLessThan:
		if len(rule.Values) != 1 {
			return false
		}
		t, ok := rule.Values[0].(time.Time)
		return ok && Truncate(t, g).Equal(t)
	}
	return false
}

// Truncate is date_trunc(g, t) in UTC: weeks start on Monday (ISO).
func Truncate(t time.Time, g semantic.Grain) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	switch g {
	case semantic.GrainHour:
		return time.Date(y, m, d, t.Hour(), 0, 0, 0, time.UTC)
	case semantic.GrainDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case semantic.GrainWeek:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
	case semantic.GrainMonth:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	case semantic.GrainQuarter:
		return time.Date(y, (m-1)/3*3+1, 1, 0, 0, 0, 0, time.UTC)
	case semantic.GrainYear:
		return time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return t
}

// scopeRules resolves a pre-aggregate's filters like a query's WHERE
// rules (semantic.ScopeCond): each a field and typed values.
func scopeRules(m *semantic.Model, p *semantic.PreAggregate) ([]*semantic.Rule, error) {
	c, err := semantic.ScopeCond(m, p)
	if err != nil {
		return nil, err
	}
	return leaves(c), nil
}

func describeRule(r *semantic.Rule) string {
	vals := make([]string, len(r.Values))
	for i, v := range r.Values {
		if t, ok := v.(time.Time); ok {
			vals[i] = t.Format(time.RFC3339)
			continue
		}
		vals[i] = fmt.Sprint(v)
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s %s", r.Field.ID, r.Operator, strings.Join(vals, ", ")))
}

// defHash is the definition hash an active build must carry.
var defHash = semantic.PreAggHash
