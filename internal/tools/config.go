package tools

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config values arrive rendered from templates and decoded from JSON, so a
// number may be float64, json.Number, a Go int, or a numeric string.

func configError(kind, key, format string, args ...any) error {
	return &Error{
		Kind:    ErrorKindConfig,
		Message: fmt.Sprintf("%s tool: %q %s", kind, key, fmt.Sprintf(format, args...)),
	}
}

// optString returns cfg[key] as a string, or def when absent or null.
func optString(cfg map[string]any, kind, key, def string) (string, error) {
	v, ok := cfg[key]
	if !ok || v == nil {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", configError(kind, key, "must be a string, got %s", describe(v))
	}
	return s, nil
}

// optSeconds returns cfg[key], a positive number of seconds, as a duration,
// or def when absent or null. Fractions are allowed ("0.5").
func optSeconds(cfg map[string]any, kind, key string, def time.Duration) (time.Duration, error) {
	v, ok := cfg[key]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := toFloat(v)
	// The upper bound keeps the nanosecond conversion from overflowing.
	if !ok || math.IsNaN(f) || f <= 0 || f > math.MaxInt64/float64(time.Second) {
		return 0, configError(kind, key, "must be a positive number of seconds, got %s", describe(v))
	}
	return time.Duration(f * float64(time.Second)), nil
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		return f, err == nil
	}
	return 0, false
}

// scalarString renders a string, number or bool the way a user wrote it, for
// places that need text (env values, headers, query parameters).
func scalarString(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case json.Number:
		return s.String(), true
	case bool:
		return strconv.FormatBool(s), true
	case float64:
		return strconv.FormatFloat(s, 'f', -1, 64), true
	case float32:
		return strconv.FormatFloat(float64(s), 'f', -1, 32), true
	case int, int32, int64, uint, uint32, uint64:
		return fmt.Sprint(s), true
	}
	return "", false
}

// optStringMap returns cfg[key], a map of scalar values, as strings.
func optStringMap(cfg map[string]any, kind, key string) (map[string]string, error) {
	v, ok := cfg[key]
	if !ok || v == nil {
		return nil, nil
	}
	var out map[string]string
	switch m := v.(type) {
	case map[string]string:
		out = m
	case map[string]any:
		out = make(map[string]string, len(m))
		for k, raw := range m {
			s, ok := scalarString(raw)
			if !ok {
				return nil, configError(kind, key, "value for %q must be a string, number or bool, got %s", k, describe(raw))
			}
			out[k] = s
		}
	default:
		return nil, configError(kind, key, "must be a map of names to values, got %s", describe(v))
	}
	for k := range out {
		if k == "" {
			return nil, configError(kind, key, "has an empty name")
		}
	}
	return out, nil
}

// sortedKeys gives maps a deterministic order (env, headers) so runs are
// reproducible.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// describe names a value's type for error messages without dumping large or
// secret values.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 40 {
			return fmt.Sprintf("string %q...", x[:40])
		}
		return fmt.Sprintf("string %q", x)
	case bool:
		return "bool"
	case float64, float32, int, int32, int64, uint, uint32, uint64, json.Number:
		return fmt.Sprintf("number %v", x)
	case map[string]any:
		return "map"
	case []any:
		return "list"
	}
	return fmt.Sprintf("%T", v)
}
