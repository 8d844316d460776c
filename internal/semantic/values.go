package semantic

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Filter values are typed by the field they filter: a string dimension
// takes strings (numbers are accepted and written as text), a number
// dimension or any metric takes numbers (or numeric strings), a boolean
// takes true/false (or "true"/"false"), and a date or timestamp takes
// "2024-01-02", "2024-01-02T10:00:00Z" (RFC 3339, any offset, converted to
// UTC) or "2024-01-02 10:00:00" (UTC). Resolved values are string,
// float64, bool and time.Time.

// valueType is the type a field's filter values take.
func valueType(f Field) DimType {
	if f.Dim == nil {
		return DimNumber
	}
	return DimResultType(f.Dim, f.Grain)
}

// operatorsFor lists the operators a value type supports.
func operatorsFor(t DimType) []FilterOperator {
	base := []FilterOperator{OpEquals, OpNotEquals, OpIsNull, OpNotNull}
	switch t {
	case DimString:
		return append(base, OpStartsWith, OpEndsWith, OpInclude)
	case DimNumber, DimDate, DimTimestamp:
		return append(base, OpGreaterThan, OpGreaterThanOrEqual, OpLessThan, OpLessThanOrEqual, OpInBetween)
	}
	return base
}

// checkValues checks a rule's operator and values against the field and
// returns the typed values. The error text names neither the field nor
// the position; callers add those.
func checkValues(f Field, op FilterOperator, values []any) ([]any, error) {
	t := valueType(f)
	ops := operatorsFor(t)
	known := false
	for _, o := range ops {
		if o == op {
			known = true
		}
	}
	if !known {
		names := make([]string, len(ops))
		for i, o := range ops {
			names[i] = string(o)
		}
		if !isOperator(op) {
			return nil, fmt.Errorf("unknown operator %q (operators for a %s: %s)", op, t, strings.Join(names, ", "))
		}
		return nil, fmt.Errorf("operator %s does not apply to a %s (use one of %s)", op, t, strings.Join(names, ", "))
	}
	switch op {
	case OpIsNull, OpNotNull:
		return nil, nil // values, if any, mean nothing
	case OpGreaterThan, OpGreaterThanOrEqual, OpLessThan, OpLessThanOrEqual:
		if len(values) != 1 {
			return nil, fmt.Errorf("operator %s takes exactly one value, got %d", op, len(values))
		}
	case OpInBetween:
		if len(values) != 2 {
			return nil, fmt.Errorf("operator inBetween takes two values (from, to), got %d", len(values))
		}
	default:
		if len(values) == 0 {
			return nil, fmt.Errorf("operator %s needs at least one value", op)
		}
	}
	if len(values) > maxFilterValues {
		return nil, fmt.Errorf("at most %d values in one filter, got %d", maxFilterValues, len(values))
	}
	out := make([]any, len(values))
	for i, v := range values {
		x, err := coerce(t, v)
		if err != nil {
			return nil, err
		}
		out[i] = x
	}
	return out, nil
}

// maxFilterValues bounds one rule's value list (and the SQL it renders).
const maxFilterValues = 1000

func isOperator(op FilterOperator) bool {
	switch op {
	case OpEquals, OpNotEquals, OpIsNull, OpNotNull, OpGreaterThan, OpGreaterThanOrEqual,
		OpLessThan, OpLessThanOrEqual, OpInBetween, OpStartsWith, OpEndsWith, OpInclude:
		return true
	}
	return false
}

// coerce converts one filter value to the field's type.
func coerce(t DimType, v any) (any, error) {
	switch t {
	case DimString:
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case float64, int, int64, json.Number:
			n, err := number(x)
			if err != nil {
				return nil, err
			}
			s = strconv.FormatFloat(n, 'f', -1, 64)
		default:
			return nil, fmt.Errorf("value %s is not a string", show(v))
		}
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return nil, fmt.Errorf("value %q is not valid text (invalid UTF-8 or a NUL character)", s)
		}
		return s, nil
	case DimNumber:
		return number(v)
	case DimBoolean:
		switch x := v.(type) {
		case bool:
			return x, nil
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
		}
		return nil, fmt.Errorf("value %s is not a boolean (true or false)", show(v))
	case DimDate, DimTimestamp:
		switch x := v.(type) {
		case time.Time:
			return x.UTC(), nil
		case string:
			return parseTime(x)
		}
		return nil, fmt.Errorf("value %s is not a date (write \"2024-01-02\" or \"2024-01-02T10:00:00Z\")", show(v))
	}
	return nil, fmt.Errorf("cannot filter a %s", t)
}

func number(v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	case json.Number:
		p, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, fmt.Errorf("value %s is not a number", show(v))
		}
		f = p
	case string:
		p, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("value %s is not a number", show(v))
		}
		f = p
	default:
		return 0, fmt.Errorf("value %s is not a number", show(v))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("value %s is not a finite number", show(v))
	}
	return f, nil
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", time.DateOnly}

func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			t = t.UTC()
			if t.Year() < 1 || t.Year() > 9999 {
				break
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("value %q is not a date or timestamp (write \"2024-01-02\" or \"2024-01-02T10:00:00Z\")", s)
}

func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// ScopeCond is the conjunction of a pre-aggregate's filters, resolved
// against its model like a query's dimension filters (fields at their raw
// value, typed values). nil when the pre-aggregate has no filters.
// Package preagg uses it both in the plan's WHERE and to decide whether a
// query's filters imply the scope.
func ScopeCond(m *Model, p *PreAggregate) (*Cond, error) {
	if len(p.Filters) == 0 {
		return nil, nil
	}
	idx := newFieldIndex(m, nil)
	c := &Cond{}
	for _, fr := range p.Filters {
		f, ok := idx.lookup(fr.Target.FieldID)
		if !ok || f.Dim == nil {
			return nil, &QueryError{Code: CodeUnknownField, FieldID: fr.Target.FieldID,
				Message: fmt.Sprintf("pre-aggregate %s filters on %q, which is not a dimension of model %s", p.Name, fr.Target.FieldID, m.Name)}
		}
		vals, err := checkValues(f, fr.Operator, fr.Values)
		if err != nil {
			return nil, &QueryError{Code: CodeInvalidFilter, FieldID: f.ID,
				Message: fmt.Sprintf("pre-aggregate %s filter on %s: %v", p.Name, f.ID, err)}
		}
		c.Items = append(c.Items, &Cond{Rule: &Rule{Field: f, Operator: fr.Operator, Values: vals}})
	}
	return c, nil
}
