//go:build cgo

package sqlvalue

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"io"
	"reflect"
	"testing"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

type duckBundle struct {
	ctx  context.Context
	conn *sql.Conn
}

func setupDuck(t *testing.T) *duckBundle {
	t.Helper()
	connector, err := duckdb.NewConnector(":memory:", nil)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	ctx := t.Context()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &duckBundle{ctx: ctx, conn: conn}
}

// convert runs "SELECT expr" and converts the value as the duckdb tool and
// warehouse driver do: straight off duckdb-go's driver.Rows, with the
// column's type name.
func (b *duckBundle) convert(t *testing.T, expr string) any {
	t.Helper()
	var got any
	err := b.conn.Raw(func(dc any) error {
		rows, err := dc.(driver.QueryerContext).QueryContext(b.ctx, "SELECT "+expr, nil)
		if err != nil {
			return err
		}
		defer rows.Close()
		typeName := rows.(driver.RowsColumnTypeDatabaseTypeName).ColumnTypeDatabaseTypeName(0)
		dest := make([]driver.Value, 1)
		if err := rows.Next(dest); err != nil {
			return err
		}
		got = FromDuckDB(typeName, dest[0])
		if err := rows.Next(dest); err != io.EOF {
			t.Errorf("SELECT %s: more than one row (%v)", expr, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("SELECT %s: %v", expr, err)
	}
	return got
}

func TestFromDuckDB(t *testing.T) {
	t.Parallel()
	b := setupDuck(t)
	for _, tc := range []struct {
		expr string
		want any
	}{
		{"NULL::INTEGER", nil},
		{"true", true},
		{"1::TINYINT", int64(1)},
		{"200::UTINYINT", int64(200)},
		{"9007199254740993::BIGINT", int64(9007199254740993)},
		{"42::HUGEINT", int64(42)},
		{"170141183460469231731687303715884105727::HUGEINT", "170141183460469231731687303715884105727"},
		{"18446744073709551615::UBIGINT", "18446744073709551615"},
		{"1.5::FLOAT", 1.5},
		{"0.1::DOUBLE", 0.1},
		{"'NaN'::DOUBLE", "NaN"},
		{"'-inf'::DOUBLE", "-Inf"},
		{"12.25::DECIMAL(10,2)", 12.25},
		{"(-0.05)::DECIMAL(4,2)", "-0.05"},
		{"1234567890123.4567::DECIMAL(18,4)", "1234567890123.4567"},
		{"12345678901234567890.123::DECIMAL(38,3)", "12345678901234567890.123"},
		{"'héllo'", "héllo"},
		{"TIMESTAMP '2024-03-01 12:34:56.789'", "2024-03-01T12:34:56.789Z"},
		{"TIMESTAMPTZ '2024-03-01 12:34:56+02'", "2024-03-01T10:34:56Z"},
		{"DATE '2024-03-01'", "2024-03-01"},
		{"TIME '13:14:15.5'", "13:14:15.5"},
		{`'\x00\xFF'::BLOB`, "AP8="},
		{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"INTERVAL '1 year 2 months 3 days 4 seconds'", map[string]any{"months": int64(14), "days": int64(3), "micros": int64(4_000_000)}},
		{"[1, NULL, 3]", []any{int64(1), nil, int64(3)}},
		{"[1.5::DECIMAL(4,1), 12345678901234567890.123::DECIMAL(38,3)]", []any{1.5, "12345678901234567890.123"}},
		{"['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID]", []any{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}},
		{"[['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID]]", []any{[]any{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}}},
		{"[DATE '2024-03-01', NULL]", []any{"2024-03-01", nil}},
		{"array_value(TIME '13:14:15', TIME '01:02:03')", []any{"13:14:15", "01:02:03"}},
		{"['a'::BLOB]", []any{"YQ=="}},
		{"{'a': 1, 'b': 'x', 'k': 1.5::DECIMAL(4,1)}", map[string]any{"a": int64(1), "b": "x", "k": 1.5}},
		{"MAP {'x': 1}", map[string]any{"x": int64(1)}},
		{"MAP {1: 'a', 2: NULL}", map[string]any{"1": "a", "2": nil}},
		{`'{"a": [1, 2.5]}'::JSON`, map[string]any{"a": []any{1.0, 2.5}}},
	} {
		got := b.convert(t, tc.expr)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v (%T), want %#v (%T)", tc.expr, got, got, tc.want, tc.want)
		}
		if _, err := json.Marshal(got); err != nil {
			t.Errorf("%s: %#v is not JSON-encodable: %v", tc.expr, got, err)
		}
	}
}

// TestFromDuckDBGoValues covers values a query does not readily produce.
func TestFromDuckDBGoValues(t *testing.T) {
	t.Parallel()
	uuid := []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	for _, tc := range []struct {
		name     string
		typeName string
		in       any
		want     any
	}{
		{"nil *Decimal", "DECIMAL(4,2)", (*duckdb.Decimal)(nil), nil},
		{"Decimal without value", "DECIMAL(4,2)", duckdb.Decimal{Width: 4, Scale: 2}, 0.0},
		{"UUID as bytes", "UUID", uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"16-byte BLOB", "BLOB", uuid, "oO68mZwLTvi7bWu5vTgKEQ=="},
		{"UUID value", "", duckdb.UUID(uuid), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	} {
		if got := FromDuckDB(tc.typeName, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: FromDuckDB(%q, %#v) = %#v, want %#v", tc.name, tc.typeName, tc.in, got, tc.want)
		}
	}
}
