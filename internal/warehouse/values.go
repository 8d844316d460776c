package warehouse

import (
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// exactNumber returns a decimal as float64 when the conversion loses
// nothing, else as its string so no precision is silently dropped.
func exactNumber(text string) any {
	r, ok := new(big.Rat).SetString(text)
	if !ok {
		return text // NaN, Infinity
	}
	if f, exact := r.Float64(); exact {
		return f
	}
	return text
}

// decodeJSON decodes a JSON column, keeping numbers exact (json.Number) so
// 64-bit ids survive the trip to the results store.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("json value does not parse: %w", err)
	}
	return v, nil
}

// jsonValue makes a decoded Go value JSON-friendly: integers to int64
// (or a string beyond int64), non-finite floats to strings, times to
// RFC 3339 in UTC, bytes to base64, UUIDs to their text form.
func jsonValue(v any) any {
	switch x := v.(type) {
	case nil, bool, string, int64, json.Number:
		return x
	case int:
		return int64(x)
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint:
		return jsonValue(uint64(x))
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x > math.MaxInt64 {
			return strconv.FormatUint(x, 10)
		}
		return int64(x)
	case *big.Int:
		if x == nil {
			return nil
		}
		if x.IsInt64() {
			return x.Int64()
		}
		return x.String()
	case float32:
		return jsonValue(float64(x))
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case [16]byte: // uuid
		return fmt.Sprintf("%x-%x-%x-%x-%x", x[0:4], x[4:6], x[6:8], x[8:10], x[10:16])
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonValue(e)
		}
		return out
	case pgtype.Numeric: // elements of numeric[]
		if dv, err := x.Value(); err == nil && dv != nil {
			return exactNumber(dv.(string))
		}
		return nil
	case driver.Valuer:
		if dv, err := x.Value(); err == nil {
			return jsonValue(dv)
		}
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}
