package semantic

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// nameRE is a model, field or pre-aggregate name.
var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// QueryError is why a metric query was refused. Code is stable (the API's
// error code); FieldID names the offending field when there is one.
type QueryError struct {
	Code    string
	FieldID string
	Message string
}

func (e *QueryError) Error() string { return e.Message }

// QueryError codes. unknown_model, unknown_field and invalid_filter are
// apierr codes of the same name; invalid_query is a bad_request.
const (
	CodeUnknownModel  = "unknown_model"
	CodeUnknownField  = "unknown_field"
	CodeInvalidFilter = "invalid_filter"
	CodeInvalidQuery  = "invalid_query"
)

// maxFilterDepth bounds the nesting of filter groups.
const maxFilterDepth = 16

// maxFilterRules bounds the rules of one query's filters.
const maxFilterRules = 200

// fieldIndex finds a model's fields by field id.
type fieldIndex struct {
	model string
	ids   map[string]Field   // canonical "<model>_<name>[_<grain>]"
	bare  map[string][]Field // "<name>[_<grain>]"
	names []string           // canonical ids, for "did you mean"
}

func newFieldIndex(m *Model, custom []AdditionalMetric) *fieldIndex {
	x := &fieldIndex{model: m.Name, ids: map[string]Field{}, bare: map[string][]Field{}}
	add := func(name string, f Field) {
		if _, dup := x.ids[f.ID]; !dup {
			x.ids[f.ID] = f
			x.names = append(x.names, f.ID)
		}
		x.bare[name] = append(x.bare[name], f)
	}
	for i := range m.Dimensions {
		d := &m.Dimensions[i]
		add(d.Name, Field{ID: FieldID(m.Name, d.Name, ""), Dim: d})
		for _, g := range DimGrains(d) {
			add(d.Name+"_"+string(g), Field{ID: FieldID(m.Name, d.Name, g), Dim: d, Grain: g})
		}
	}
	for i := range m.Metrics {
		mt := &m.Metrics[i]
		add(mt.Name, Field{ID: FieldID(m.Name, mt.Name, ""), Metric: mt})
	}
	for i := range custom {
		c := &custom[i]
		add(c.Name, Field{ID: FieldID(m.Name, c.Name, ""), Custom: c})
	}
	return x
}

// DimGrains lists the grains a dimension can be asked for at: every grain
// for a timestamp, day and coarser for a date, none for other types.
func DimGrains(d *Dimension) []Grain {
	switch d.Type {
	case DimTimestamp:
		return Grains
	case DimDate:
		return Grains[1:]
	}
	return nil
}

// lookup resolves a canonical field id, or a bare one that names exactly
// one field.
func (x *fieldIndex) lookup(id string) (Field, bool) {
	if f, ok := x.ids[id]; ok {
		return f, true
	}
	if fs := x.bare[id]; len(fs) == 1 {
		return fs[0], true
	}
	return Field{}, false
}

func (x *fieldIndex) unknown(id, what string) *QueryError {
	msg := fmt.Sprintf("unknown field %q in %s: model %s has no such field", id, what, x.model)
	if fs := x.bare[id]; len(fs) > 1 {
		ids := make([]string, len(fs))
		for i, f := range fs {
			ids[i] = f.ID
		}
		msg = fmt.Sprintf("field %q in %s is ambiguous in model %s: write one of %s", id, what, x.model, strings.Join(ids, ", "))
	} else if s := nearest(id, x.names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return &QueryError{Code: CodeUnknownField, FieldID: id, Message: msg}
}

// Resolve checks a metric query against its model and types every field
// and filter value. Errors are *QueryError.
func Resolve(m *Model, q MetricQuery) (*Resolved, error) {
	if q.ExploreName != m.Name {
		return nil, &QueryError{Code: CodeUnknownModel, Message: fmt.Sprintf("unknown model %q (exploreName): this query was given model %s", q.ExploreName, m.Name)}
	}
	invalid := func(format string, args ...any) error {
		return &QueryError{Code: CodeInvalidQuery, Message: fmt.Sprintf(format, args...)}
	}
	if len(q.TableCalculations) > 0 {
		return nil, invalid("tableCalculations are not supported: compute them from the result rows")
	}
	if len(q.CustomDimensions) > 0 {
		return nil, invalid("customDimensions are not supported: declare the dimension in the model")
	}
	if len(q.Dimensions) == 0 && len(q.Metrics) == 0 {
		return nil, invalid("the query asks for no fields: give at least one dimension or metric")
	}
	if q.Limit < 0 || q.Limit > MaxLimit {
		return nil, invalid("limit %d is out of range: 1 to %d (0 or absent means %d)", q.Limit, MaxLimit, DefaultLimit)
	}
	if err := checkCustom(m, q.AdditionalMetrics); err != nil {
		return nil, err
	}
	idx := newFieldIndex(m, q.AdditionalMetrics)
	r := &Resolved{Model: m, Limit: q.Limit}
	if r.Limit == 0 {
		r.Limit = DefaultLimit
	}
	inQuery := map[string]bool{}
	for _, id := range q.Dimensions {
		f, ok := idx.lookup(id)
		if !ok {
			return nil, idx.unknown(id, "dimensions")
		}
		if f.Dim == nil {
			return nil, &QueryError{Code: CodeInvalidQuery, FieldID: id, Message: fmt.Sprintf("%q in dimensions is a metric: list it under metrics", id)}
		}
		if inQuery[f.ID] {
			return nil, &QueryError{Code: CodeInvalidQuery, FieldID: id, Message: fmt.Sprintf("field %s is listed twice", f.ID)}
		}
		inQuery[f.ID] = true
		r.Dimensions = append(r.Dimensions, f)
	}
	for _, id := range q.Metrics {
		f, ok := idx.lookup(id)
		if !ok {
			return nil, idx.unknown(id, "metrics")
		}
		if f.Dim != nil {
			return nil, &QueryError{Code: CodeInvalidQuery, FieldID: id, Message: fmt.Sprintf("%q in metrics is a dimension: list it under dimensions", id)}
		}
		if inQuery[f.ID] {
			return nil, &QueryError{Code: CodeInvalidQuery, FieldID: id, Message: fmt.Sprintf("field %s is listed twice", f.ID)}
		}
		inQuery[f.ID] = true
		r.Metrics = append(r.Metrics, f)
	}
	fr := filterResolver{idx: idx}
	var err error
	if r.Where, err = fr.group(q.Filters.Dimensions, false, 0); err != nil {
		return nil, err
	}
	if r.Having, err = fr.group(q.Filters.Metrics, true, 0); err != nil {
		return nil, err
	}
	sorted := map[string]bool{}
	for _, s := range q.Sorts {
		f, ok := idx.lookup(s.FieldID)
		if !ok {
			return nil, idx.unknown(s.FieldID, "sorts")
		}
		if !inQuery[f.ID] {
			return nil, &QueryError{Code: CodeInvalidQuery, FieldID: s.FieldID, Message: fmt.Sprintf("sort on %s, which is not a dimension or metric of the query: add it or sort by another field", f.ID)}
		}
		if sorted[f.ID] {
			return nil, &QueryError{Code: CodeInvalidQuery, FieldID: s.FieldID, Message: fmt.Sprintf("field %s is sorted twice", f.ID)}
		}
		sorted[f.ID] = true
		r.Sorts = append(r.Sorts, ResolvedSort{Field: f, Descending: s.Descending})
	}
	return r, nil
}

// checkCustom validates the query's additional metrics.
func checkCustom(m *Model, cs []AdditionalMetric) error {
	seen := map[string]bool{}
	for _, c := range cs {
		bad := func(format string, args ...any) error {
			return &QueryError{Code: CodeInvalidQuery, FieldID: FieldID(m.Name, c.Name, ""), Message: "additional metric " + fmt.Sprintf("%q: ", c.Name) + fmt.Sprintf(format, args...)}
		}
		if !nameRE.MatchString(c.Name) {
			return bad("the name must match %s", nameRE)
		}
		if c.Table != "" && c.Table != m.Name {
			return bad("table %q is not the explore %s", c.Table, m.Name)
		}
		if seen[c.Name] || m.Dimension(c.Name) != nil || m.Metric(c.Name) != nil {
			return bad("the name is already a field of model %s", m.Name)
		}
		seen[c.Name] = true
		switch c.Type {
		case MetricCount, MetricCountDistinct, MetricSum, MetricMin, MetricMax, MetricAverage, MetricMedian:
		default:
			return bad("type %q is not one of count, count_distinct, sum, min, max, average, median", c.Type)
		}
		if strings.TrimSpace(c.SQL) == "" && c.Type != MetricCount {
			return bad("sql is required")
		}
		if len(c.SQL) > maxSQLLen {
			return bad("sql is longer than %d bytes", maxSQLLen)
		}
	}
	return nil
}

// maxSQLLen bounds an expression written in a query.
const maxSQLLen = 10000

type filterResolver struct {
	idx   *fieldIndex
	rules int
}

// group resolves a top-level filter group (nil stays nil; an empty group
// is no filter).
func (fr *filterResolver) group(g *FilterGroup, metrics bool, depth int) (*Cond, error) {
	if g == nil {
		return nil, nil
	}
	c, err := fr.items(g.And, g.Or, metrics, depth)
	if err != nil || c == nil || (c.Rule == nil && len(c.Items) == 0) {
		return nil, err
	}
	return c, nil
}

func (fr *filterResolver) items(and, or []FilterItem, metrics bool, depth int) (*Cond, error) {
	if depth >= maxFilterDepth {
		return nil, &QueryError{Code: CodeInvalidFilter, Message: fmt.Sprintf("filter groups are nested deeper than %d levels", maxFilterDepth)}
	}
	if len(and) > 0 && len(or) > 0 {
		return nil, &QueryError{Code: CodeInvalidFilter, Message: "a filter group has both and and or: nest one inside the other"}
	}
	c := &Cond{Or: len(or) > 0}
	list := and
	if c.Or {
		list = or
	}
	for _, it := range list {
		switch {
		case it.Target.FieldID != "" && (len(it.And) > 0 || len(it.Or) > 0):
			return nil, &QueryError{Code: CodeInvalidFilter, FieldID: it.Target.FieldID, Message: "a filter item is both a rule (target) and a group (and/or): split them"}
		case it.Target.FieldID != "" && it.Disabled:
			continue
		case it.Target.FieldID != "":
			rc, err := fr.rule(it.FilterRule, metrics)
			if err != nil {
				return nil, err
			}
			c.Items = append(c.Items, rc)
		case it.And != nil || it.Or != nil:
			sub, err := fr.items(it.And, it.Or, metrics, depth+1)
			if err != nil {
				return nil, err
			}
			if sub.Rule == nil && len(sub.Items) == 0 {
				continue // an empty group is no condition, as in Lightdash
			}
			c.Items = append(c.Items, sub)
		default:
			return nil, &QueryError{Code: CodeInvalidFilter, Message: "a filter item has no target.fieldId and no and/or group"}
		}
	}
	return c, nil
}

func (fr *filterResolver) rule(rule FilterRule, metrics bool) (*Cond, error) {
	fr.rules++
	if fr.rules > maxFilterRules {
		return nil, &QueryError{Code: CodeInvalidFilter, Message: fmt.Sprintf("more than %d filter rules", maxFilterRules)}
	}
	id := rule.Target.FieldID
	f, ok := fr.idx.lookup(id)
	if !ok {
		return nil, fr.idx.unknown(id, "filters")
	}
	if metrics && f.Dim != nil {
		return nil, &QueryError{Code: CodeInvalidFilter, FieldID: id, Message: fmt.Sprintf("filter on dimension %s is under filters.metrics: move it to filters.dimensions", f.ID)}
	}
	if !metrics && f.Dim == nil {
		return nil, &QueryError{Code: CodeInvalidFilter, FieldID: id, Message: fmt.Sprintf("filter on metric %s is under filters.dimensions: move it to filters.metrics", f.ID)}
	}
	vals, err := checkValues(f, rule.Operator, rule.Values)
	if err != nil {
		return nil, &QueryError{Code: CodeInvalidFilter, FieldID: id, Message: fmt.Sprintf("filter on %s: %v", f.ID, err)}
	}
	return &Cond{Rule: &Rule{Field: f, Operator: rule.Operator, Values: vals}}, nil
}

// nearest returns the candidate closest to s within two edits (the
// earliest on ties), or "".
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted)
	for _, c := range sorted {
		if d := levenshtein(s, c, bestD); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// levenshtein is the edit distance of a and b, or max when it is at
// least max (so long inputs stay cheap).
func levenshtein(a, b string, max int) int {
	if d := len(a) - len(b); d >= max || -d >= max {
		return max
	}
	if len(a) > 64 || len(b) > 64 {
		return max
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], max)
}
