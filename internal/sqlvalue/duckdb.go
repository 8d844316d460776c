//go:build cgo

package sqlvalue

import (
	"fmt"
	"math/big"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// DuckDB is a C++ library, so FromDuckDB exists only in cgo builds, as
// do its callers; the rest of the package builds with CGO_ENABLED=0.

// FromDuckDB converts a value from duckdb-go's driver.Rows like
// FromPostgresText does for PostgreSQL: DECIMAL via ExactNumber, HUGEINT
// and UBIGINT beyond int64 to decimal strings, UUIDs to their text form,
// INTERVAL to {months, days, micros}, MAP to an object, DATE and TIME to
// their SQL text. typeName is the column's DuckDB type name (as
// driver.RowsColumnTypeDatabaseTypeName reports it), which tells a UUID,
// DATE or TIME from the BLOB or TIMESTAMP Go value it arrives as.
func FromDuckDB(typeName string, v any) any {
	switch x := v.(type) {
	case duckdb.Decimal:
		return ExactNumber(duckdbDecimalString(x))
	case *duckdb.Decimal:
		if x == nil {
			return nil
		}
		return ExactNumber(duckdbDecimalString(*x))
	case duckdb.Interval:
		return map[string]any{"months": int64(x.Months), "days": int64(x.Days), "micros": x.Micros}
	case duckdb.UUID:
		return JSON([16]byte(x))
	case []byte:
		if typeName == "UUID" && len(x) == 16 {
			return JSON([16]byte(x))
		}
		return JSON(x)
	case duckdb.Map:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(FromDuckDB("", k))] = FromDuckDB("", e)
		}
		return out
	case []any:
		elem := duckdbElementType(typeName)
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = FromDuckDB(elem, e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = FromDuckDB("", e)
		}
		return out
	case time.Time:
		switch typeName {
		case "TIME":
			return x.Format("15:04:05.999999")
		case "DATE":
			return x.Format(time.DateOnly)
		}
	}
	return JSON(v)
}

// duckdbElementType is the element type of a LIST ("UUID[]") or ARRAY
// ("DATE[3]") type name, so UUID, DATE and TIME elements convert as they
// do in a column of their own; "" for other types.
func duckdbElementType(typeName string) string {
	if i := strings.LastIndexByte(typeName, '['); i > 0 && strings.HasSuffix(typeName, "]") {
		return typeName[:i]
	}
	return ""
}

// duckdbDecimalString renders a DECIMAL exactly (Value scaled by 10^-Scale).
func duckdbDecimalString(d duckdb.Decimal) string {
	if d.Value == nil {
		return "0"
	}
	r := new(big.Rat).SetFrac(d.Value, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(d.Scale)), nil))
	return r.FloatString(int(d.Scale))
}
