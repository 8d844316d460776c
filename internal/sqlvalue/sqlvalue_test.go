package sqlvalue

import (
	"context"
	"encoding/json"
	"math"
	"math/big"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// defaultTestDatabaseURL is the PostgreSQL the tests run against unless
// MILLRACE_TEST_DATABASE_URL says otherwise.
const defaultTestDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

type pgBundle struct {
	ctx  context.Context
	conn *pgx.Conn
}

// setup connects to the test PostgreSQL, so the conversions are checked
// against the text the server really sends.
func setup(t *testing.T) *pgBundle {
	t.Helper()
	url := os.Getenv("MILLRACE_TEST_DATABASE_URL")
	if url == "" {
		url = defaultTestDatabaseURL
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("PostgreSQL at %s is not reachable (set MILLRACE_TEST_DATABASE_URL): %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &pgBundle{ctx: ctx, conn: conn}
}

// convert runs "SELECT expr" over the simple protocol, which returns text
// as the postgres tool and the warehouse driver ask for, and converts the
// one value.
func (b *pgBundle) convert(t *testing.T, expr string) (any, error) {
	t.Helper()
	results, err := b.conn.PgConn().Exec(b.ctx, "SELECT "+expr).ReadAll()
	if err != nil {
		t.Fatalf("SELECT %s: %v", expr, err)
	}
	r := results[0]
	if len(r.Rows) != 1 || len(r.FieldDescriptions) != 1 {
		t.Fatalf("SELECT %s: %d rows of %d columns, want one value", expr, len(r.Rows), len(r.FieldDescriptions))
	}
	return FromPostgresText(b.conn.TypeMap(), r.FieldDescriptions[0].DataTypeOID, r.Rows[0][0])
}

func TestFromPostgresText(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		expr string
		want any
	}{
		{"NULL::int", nil},
		{"true", true},
		{"false", false},
		{"7::int2", int64(7)},
		{"(-2147483648)::int4", int64(math.MinInt32)},
		{"9223372036854775807::int8", int64(math.MaxInt64)},
		{"'pg_class'::regclass::oid", int64(1259)},
		{"1.5::float8", 1.5},
		{"0.1::float4", 0.1},
		{"'NaN'::float8", "NaN"},
		{"'Infinity'::float8", "Infinity"},
		{"'-Infinity'::float4", "-Infinity"},
		{"12.50::numeric", 12.5},
		{"9007199254740993::numeric", "9007199254740993"}, // float64 would round it
		{"12345678901234567890.123::numeric", "12345678901234567890.123"},
		{"'NaN'::numeric", "NaN"},
		{"'-Infinity'::numeric", "-Infinity"},
		{`'{"a": [1, 2.5], "id": 12345678901234567890}'::jsonb`,
			map[string]any{"a": []any{json.Number("1"), json.Number("2.5")}, "id": json.Number("12345678901234567890")}},
		{"'[true, null]'::json", []any{true, nil}},
		{"'null'::jsonb", nil},
		{`'\x0001ff'::bytea`, "AAH/"},
		{"''::bytea", ""},
		{"'text ü'::text", "text ü"},
		{"'v'::varchar(3)", "v"},
		{"'ab'::char(3)", "ab "},
		{"'x'::name", "x"},
		{"'2024-01-02'::date", "2024-01-02"},
		{"'infinity'::date", "infinity"},
		{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"'2024-01-02 03:04:05.123+02'::timestamptz", "2024-01-02T01:04:05.123Z"},
		{"'2024-01-02 03:04:05'::timestamp", "2024-01-02T03:04:05Z"},
		{"'infinity'::timestamp", "infinity"},
		{"'-infinity'::timestamptz", "-infinity"},
		{"'1 day 02:00:00'::interval", "1 day 02:00:00"},
		{"'13:14:15'::time", "13:14:15"},
		{"'(1,2)'::point", "(1,2)"},
		{"ARRAY[1, NULL, 3]", []any{int64(1), nil, int64(3)}},
		{"ARRAY['x', NULL]", []any{"x", nil}},
		{"'{}'::int[]", []any{}},
		{"ARRAY[1.5, 12345678901234567890.123]::numeric[]", []any{1.5, "12345678901234567890.123"}},
		{"ARRAY['NaN', 2]::float8[]", []any{"NaN", 2.0}},
		{"ARRAY['infinity', '2024-01-02 03:04:05']::timestamp[]", []any{"infinity", "2024-01-02T03:04:05Z"}},
		{`ARRAY['\x00ff'::bytea]`, []any{"AP8="}},
		{"ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]", []any{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}},
	} {
		got, err := b.convert(t, tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v (%T), want %#v (%T)", tc.expr, got, got, tc.want, tc.want)
		}
		if _, err := json.Marshal(got); err != nil {
			t.Errorf("%s: %#v is not JSON-encodable: %v", tc.expr, got, err)
		}
	}
}

func TestFromPostgresTextUnknownType(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// An enum has an OID the type map does not know: its text is kept.
	if _, err := b.conn.Exec(b.ctx, "CREATE TYPE pg_temp.mood AS ENUM ('ok', 'sad')"); err != nil {
		t.Fatal(err)
	}
	got, err := b.convert(t, "'sad'::pg_temp.mood")
	if err != nil || got != "sad" {
		t.Fatalf("enum = %#v, %v; want \"sad\"", got, err)
	}
}

func TestFromPostgresTextErrors(t *testing.T) {
	t.Parallel()
	m := pgtype.NewMap()
	for _, tc := range []struct {
		oid  uint32
		raw  string
		want string // in the error
	}{
		{pgtype.Int4OID, "four", "invalid syntax"},
		{pgtype.ByteaOID, `\000`, "bytea_output"}, // the escape format
		{pgtype.JSONBOID, `{"a":`, "json value does not parse"},
		{pgtype.TimestampOID, "yesterday-ish", "date/time value"},
	} {
		got, err := FromPostgresText(m, tc.oid, []byte(tc.raw))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("oid %d %q = %#v, %v; want an error about %q", tc.oid, tc.raw, got, err, tc.want)
		}
	}
}

func TestExactNumber(t *testing.T) {
	t.Parallel()
	for text, want := range map[string]any{
		"0":                        0.0,
		"12.50":                    12.5,
		"-0.25":                    -0.25,
		"9007199254740992":         9007199254740992.0, // 2^53 is exact
		"9007199254740993":         "9007199254740993",
		"0.1":                      "0.1", // no float64 is 0.1 exactly
		"12345678901234567890.123": "12345678901234567890.123",
		"NaN":                      "NaN",
		"Infinity":                 "Infinity",
	} {
		if got := ExactNumber(text); got != want {
			t.Errorf("ExactNumber(%q) = %#v, want %#v", text, got, want)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	got, err := DecodeJSON([]byte(`{"id": 12345678901234567891, "f": 0.5, "l": [null, "s"]}`))
	want := map[string]any{"id": json.Number("12345678901234567891"), "f": json.Number("0.5"), "l": []any{nil, "s"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeJSON = %#v, %v; want %#v", got, err, want)
	}
	if _, err := DecodeJSON([]byte(`[1,`)); err == nil || !strings.Contains(err.Error(), "json value does not parse") {
		t.Fatalf("DecodeJSON of a broken value: %v", err)
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	numeric := func(s string) pgtype.Numeric {
		var n pgtype.Numeric
		if err := n.Scan(s); err != nil {
			t.Fatal(err)
		}
		return n
	}
	huge, _ := new(big.Int).SetString("170141183460469231731687303715884105727", 10)
	tz := time.FixedZone("UTC+2", 2*60*60)
	for _, tc := range []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"bool", true, true},
		{"string", "s", "s"},
		{"json.Number", json.Number("12345678901234567890"), json.Number("12345678901234567890")},
		{"int", 1, int64(1)},
		{"int8", int8(-8), int64(-8)},
		{"int16", int16(16), int64(16)},
		{"int32", int32(math.MinInt32), int64(math.MinInt32)},
		{"int64", int64(math.MaxInt64), int64(math.MaxInt64)},
		{"uint", uint(7), int64(7)},
		{"uint8", uint8(255), int64(255)},
		{"uint16", uint16(65535), int64(65535)},
		{"uint32", uint32(math.MaxUint32), int64(math.MaxUint32)},
		{"uint64 in int64", uint64(math.MaxInt64), int64(math.MaxInt64)},
		{"uint64 beyond int64", uint64(math.MaxUint64), "18446744073709551615"},
		{"big.Int small", big.NewInt(-42), int64(-42)},
		{"big.Int huge", huge, "170141183460469231731687303715884105727"},
		{"big.Int nil", (*big.Int)(nil), nil},
		{"float32", float32(0.25), 0.25},
		{"float64", 1.5, 1.5},
		{"NaN", math.NaN(), "NaN"},
		{"+Inf", math.Inf(1), "+Inf"},
		{"-Inf float32", float32(math.Inf(-1)), "-Inf"},
		{"time in UTC", time.Date(2024, 1, 2, 3, 4, 5, 123000000, tz), "2024-01-02T01:04:05.123Z"},
		{"bytes", []byte{0, 1, 0xff}, "AAH/"},
		{"uuid", [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11},
			"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"list", []any{int32(1), nil, math.Inf(1), []byte("a")}, []any{int64(1), nil, "+Inf", "YQ=="}},
		{"object", map[string]any{"n": uint64(math.MaxUint64), "m": map[string]any{"i": int16(2)}},
			map[string]any{"n": "18446744073709551615", "m": map[string]any{"i": int64(2)}}},
		{"numeric exact", numeric("12.5"), 12.5},
		{"numeric big", numeric("12345678901234567890.123"), "12345678901234567890.123"},
		{"numeric NaN", numeric("NaN"), "NaN"},
		{"numeric NULL", pgtype.Numeric{}, nil},
		{"driver.Valuer", pgtype.Int8{Int64: 9, Valid: true}, int64(9)},
		{"driver.Valuer NULL", pgtype.Text{}, nil},
		{"fmt.Stringer", pgtype.Infinity, "infinity"},
		{"other", struct{ A int }{3}, "{3}"},
	} {
		got := JSON(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: JSON(%#v) = %#v (%T), want %#v (%T)", tc.name, tc.in, got, got, tc.want, tc.want)
		}
		if _, err := json.Marshal(got); err != nil {
			t.Errorf("%s: %#v is not JSON-encodable: %v", tc.name, got, err)
		}
	}
}
