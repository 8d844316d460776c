// Package sqlvalue owns turning SQL driver values into JSON-friendly Go
// values, so the postgres and duckdb tools and the warehouse drivers
// report the same value the same way.
package sqlvalue

import (
	"database/sql/driver"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// FromPostgresText converts one text-format PostgreSQL value: integers to
// int64, floats to float64, numeric via ExactNumber, json and jsonb via
// DecodeJSON, timestamps to RFC 3339 (UTC), bytea to base64, arrays to
// lists. Other types (date, uuid, interval, enums, ...) keep PostgreSQL's
// own text form. NaN and infinities, which JSON cannot hold, become
// strings. A nil raw (SQL NULL) gives nil.
func FromPostgresText(m *pgtype.Map, oid uint32, raw []byte) (any, error) {
	if raw == nil {
		return nil, nil
	}
	text := string(raw)
	switch oid {
	case pgtype.BoolOID:
		return text == "t", nil
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		return strconv.ParseInt(text, 10, 64)
	case pgtype.Float4OID, pgtype.Float8OID:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return text, nil
		}
		return f, nil
	case pgtype.NumericOID:
		return ExactNumber(text), nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		return DecodeJSON(raw)
	case pgtype.ByteaOID:
		b, err := hex.DecodeString(strings.TrimPrefix(text, `\x`))
		if err != nil {
			return nil, fmt.Errorf("bytea value is not hex (is bytea_output set to escape?): %w", err)
		}
		return base64.StdEncoding.EncodeToString(b), nil
	case pgtype.TimestampOID, pgtype.TimestamptzOID:
		if text == "infinity" || text == "-infinity" {
			return text, nil // no time.Time holds them
		}
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID,
		pgtype.DateOID, pgtype.UUIDOID:
		return text, nil
	}
	t, ok := m.TypeForOID(oid)
	if !ok {
		return text, nil // enums, domains of unknown types, extension types
	}
	switch t.Codec.(type) {
	case *pgtype.TimestampCodec, *pgtype.TimestamptzCodec, *pgtype.ArrayCodec:
		v, err := t.Codec.DecodeValue(m, oid, pgx.TextFormatCode, raw)
		if err != nil {
			return nil, err
		}
		return JSON(v), nil
	}
	return text, nil
}

// ExactNumber returns a decimal as float64 when the conversion loses
// nothing, else as its string so no precision is silently dropped.
func ExactNumber(text string) any {
	r, ok := new(big.Rat).SetString(text)
	if !ok {
		return text // NaN, Infinity
	}
	if f, exact := r.Float64(); exact {
		return f
	}
	return text
}

// DecodeJSON decodes a JSON column, keeping numbers as json.Number so
// 64-bit ids survive the trip (as the http tool keeps them).
func DecodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("json value does not parse: %w", err)
	}
	return v, nil
}

// JSON makes a decoded Go value JSON-friendly: integers to int64 (or
// their decimal string beyond int64), non-finite floats to strings, times
// to RFC 3339 in UTC, bytes to base64, UUIDs to their text form, lists and
// objects element by element.
func JSON(v any) any {
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
		return JSON(uint64(x))
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
		return JSON(float64(x))
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
			out[i] = JSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = JSON(e)
		}
		return out
	case pgtype.Numeric: // elements of numeric[]
		if dv, err := x.Value(); err == nil && dv != nil {
			return ExactNumber(dv.(string))
		}
		return nil
	case driver.Valuer:
		if dv, err := x.Value(); err == nil {
			return JSON(dv)
		}
	case fmt.Stringer: // e.g. pgtype.InfinityModifier in timestamp[]
		return x.String()
	}
	return fmt.Sprint(v)
}
