//go:build cgo

package engine

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/warehouse"
)

const (
	stagingTable = "millrace_staging"
	partColumn   = "__millrace_partition" // the partition key of each staged row
	// NullPartition is the key of the rows whose partition column is NULL.
	NullPartition = "null"
	// allObject names the object of an unpartitioned build.
	allObject = "all"
)

// Build runs b's plan on the warehouse, writes its rows as Parquet objects
// under b.ObjectPrefix and returns the complete build (b.Keep included).
// It fails, writing nothing the server will see, when the build has more
// than b.MaxRows rows (ErrTooManyRows), as soon as the row past the limit
// arrives.
//
// The rows are staged in a DuckDB of the build's own, bounded like the
// serving one; each column keeps its warehouse type where DuckDB has it
// (a PostgreSQL numeric becomes the narrowest DECIMAL that holds every
// value exactly, or DOUBLE beyond 38 digits).
func (e *Engine) Build(ctx context.Context, b api.ClaimedBuild) (out api.BuildComplete, err error) {
	start := time.Now()
	var rows, bytes int64
	defer func() {
		mBuildDuration.WithLabelValues(outcome(ctx, err)).Observe(time.Since(start).Seconds())
		if err == nil {
			mBuildRows.Add(float64(rows))
			mBuildBytes.Add(float64(bytes))
		} else {
			err = fmt.Errorf("engine: build %s of %s/%s: %w", b.BuildUUID, b.Model, b.PreAggregate, err)
		}
	}()
	if err := storage.CheckKey(b.ObjectPrefix + "/" + allObject + ".parquet"); err != nil {
		return out, fmt.Errorf("bad object prefix %q: %w", b.ObjectPrefix, err)
	}
	drv, err := warehouse.Open(ctx, warehouse.Conn{Type: b.Warehouse.Type, URL: b.Warehouse.URL})
	if err != nil {
		return out, err
	}
	defer drv.Close()
	if b.KeySQL != "" {
		// Before the data: the key a build reports is never newer than its rows.
		if out.KeyValue, err = KeyValue(ctx, drv, b.KeySQL); err != nil {
			return out, err
		}
	}

	dir, err := os.MkdirTemp(e.buildDir, "build-*")
	if err != nil {
		return out, err
	}
	defer os.RemoveAll(dir)
	db, err := openDuckDB(e.cfg, filepath.Join(dir, "spill"))
	if err != nil {
		return out, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return out, err
	}
	defer conn.Close()

	asOf := time.Now().UTC()
	st := &stager{maxRows: b.MaxRows, partName: b.Plan.PartitionColumn, part: -1, partRows: map[string]int64{}}
	err = conn.Raw(func(dc any) error {
		qerr := drv.Query(ctx, b.Plan.SQL, func(cols []warehouse.Column) error {
			return st.begin(ctx, dc.(driver.Conn), cols, b.Warehouse.Type)
		}, st.append)
		if cerr := st.closeAppender(); qerr == nil {
			qerr = cerr
		}
		return qerr
	})
	if err != nil {
		return out, err
	}
	if st.cols == nil {
		return out, errors.New("the build's query returned no result set")
	}
	files, err := st.export(ctx, conn, dir, len(b.Keep) > 0)
	if err != nil {
		return out, err
	}

	var written []string
	defer func() {
		if err != nil { // best effort: nothing refers to these objects
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			for _, k := range written {
				e.store.Delete(dctx, k)
			}
		}
	}()
	fresh := map[string]bool{}
	for _, f := range files {
		key := b.ObjectPrefix + "/" + f.name + ".parquet"
		n, err := putFile(ctx, e.store, key, f.path)
		if err != nil {
			return out, err
		}
		written = append(written, key)
		fresh[f.key] = true
		rows += f.rows
		bytes += n
		out.Partitions = append(out.Partitions, api.PartitionObject{Key: f.key, Object: key, Rows: f.rows, Bytes: n, BuildUUID: b.BuildUUID})
	}
	for _, k := range b.Keep {
		if !fresh[k.Key] {
			out.Partitions = append(out.Partitions, k)
		}
	}
	slices.SortFunc(out.Partitions, func(a, b api.PartitionObject) int { return strings.Compare(a.Key, b.Key) })
	out.DataAsOf = &asOf
	e.log.Info("pre-aggregate built", "build", b.BuildUUID, "model", b.Model, "pre_aggregate", b.PreAggregate,
		"rows", rows, "bytes", bytes, "objects", len(files), "kept", len(b.Keep), "duration", time.Since(start))
	return out, nil
}

func putFile(ctx context.Context, s storage.Store, key, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return s.Put(ctx, key, f)
}

// stageCol is one result column: how it is staged and stored.
type stageCol struct {
	name  string
	stage string // the staging table's type
	final string // the Parquet column's type; "" is stage, "numeric" is decided from the data
	conv  func(any) (driver.Value, error)
}

type stager struct {
	maxRows  int64
	partName string
	part     int // the partition column's index, -1 for none
	cols     []stageCol
	app      *duckdb.Appender
	rows     int64
	partRows map[string]int64
	vals     []driver.Value
}

func (s *stager) begin(ctx context.Context, dc driver.Conn, cols []warehouse.Column, whType string) error {
	if len(cols) == 0 {
		return errors.New("the build's query returned no columns")
	}
	var defs []string
	seen := map[string]bool{}
	for i, c := range cols {
		if seen[c.Name] || c.Name == partColumn {
			return fmt.Errorf("the build's query returns the column %q twice (or a reserved name)", c.Name)
		}
		seen[c.Name] = true
		sc := planColumn(c, whType)
		s.cols = append(s.cols, sc)
		defs = append(defs, quoteIdent(c.Name)+" "+sc.stage)
		if c.Name == s.partName && s.partName != "" {
			if c.Type != warehouse.TypeDate && c.Type != warehouse.TypeTimestamp {
				return fmt.Errorf("partition column %q is a %s, not a date or timestamp", c.Name, c.Type)
			}
			s.part = i
		}
	}
	if s.partName != "" && s.part < 0 {
		return fmt.Errorf("partition column %q is not among the build query's columns", s.partName)
	}
	defs = append(defs, quoteIdent(partColumn)+" VARCHAR")
	if _, err := dc.(driver.ExecerContext).ExecContext(ctx, "CREATE TABLE "+stagingTable+" ("+strings.Join(defs, ", ")+")", nil); err != nil {
		return fmt.Errorf("staging table: %w", err)
	}
	app, err := duckdb.NewAppenderFromConn(dc, "", stagingTable)
	if err != nil {
		return fmt.Errorf("staging appender: %w", err)
	}
	s.app = app
	s.vals = make([]driver.Value, len(cols)+1)
	return nil
}

func (s *stager) append(row []any) error {
	s.rows++
	if s.maxRows > 0 && s.rows > s.maxRows {
		return fmt.Errorf("%w: the build has more than %d rows (max_rows); the previous build keeps serving", ErrTooManyRows, s.maxRows)
	}
	for i, v := range row {
		if v == nil {
			s.vals[i] = nil
			continue
		}
		dv, err := s.cols[i].conv(v)
		if err != nil {
			return fmt.Errorf("row %d, column %q: %w", s.rows, s.cols[i].name, err)
		}
		s.vals[i] = dv
	}
	key := allObject
	if s.part >= 0 {
		key = NullPartition
		if t, ok := s.vals[s.part].(time.Time); ok {
			key = t.UTC().Format(time.DateOnly)
		}
	}
	s.vals[len(row)] = key
	s.partRows[key]++
	return s.app.AppendRow(s.vals...)
}

func (s *stager) closeAppender() error {
	if s.app == nil {
		return nil
	}
	err := s.app.Close()
	s.app = nil
	return err
}

type builtFile struct {
	key, name, path string
	rows            int64
}

// export writes the staged rows as Parquet: one file, or one per
// partition (without the partition column). A partitioned build without
// rows and nothing kept still writes one empty file, so the build has a
// schema to serve.
func (s *stager) export(ctx context.Context, conn *sql.Conn, dir string, keeping bool) ([]builtFile, error) {
	var sel []string
	for i := range s.cols {
		c := &s.cols[i]
		if c.final == "numeric" || c.final == "hugeint" {
			t, err := numericType(ctx, conn, c.name, c.final == "hugeint")
			if err != nil {
				return nil, err
			}
			c.final = t
		}
		if i == s.part {
			continue
		}
		if c.final != "" && c.final != c.stage {
			sel = append(sel, "CAST("+quoteIdent(c.name)+" AS "+c.final+") AS "+quoteIdent(c.name))
		} else {
			sel = append(sel, quoteIdent(c.name))
		}
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("the build's only column is its partition column %q", s.partName)
	}
	var files []builtFile
	if s.part < 0 {
		files = append(files, builtFile{key: "", name: allObject, rows: s.rows})
	} else {
		for k, n := range s.partRows {
			files = append(files, builtFile{key: k, name: k, rows: n})
		}
		slices.SortFunc(files, func(a, b builtFile) int { return strings.Compare(a.key, b.key) })
		if len(files) == 0 && !keeping {
			files = append(files, builtFile{key: "", name: allObject})
		}
	}
	for i := range files {
		f := &files[i]
		f.path = filepath.Join(dir, f.name+".parquet")
		q := "SELECT " + strings.Join(sel, ", ") + " FROM " + stagingTable
		if s.part >= 0 && f.key != "" {
			q += " WHERE " + quoteIdent(partColumn) + " = " + sqlString(f.key)
		}
		copySQL := "COPY (" + q + ") TO " + sqlString(f.path) + " (FORMAT parquet, COMPRESSION zstd)"
		if _, err := conn.ExecContext(ctx, copySQL); err != nil {
			return nil, fmt.Errorf("writing Parquet: %w", err)
		}
	}
	return files, nil
}

// numericType is the narrowest type holding every staged value of a
// column of exact numbers (a PostgreSQL numeric, a DuckDB HUGEINT) exactly:
// for integers BIGINT when they all fit, else DECIMAL(p,s) with at least
// 18 digits for re-aggregation, or DOUBLE when nothing does (over 38
// digits, NaN).
func numericType(ctx context.Context, conn *sql.Conn, col string, integer bool) (string, error) {
	q := quoteIdent(col)
	var bad, wide int64
	var intDigits, scale sql.NullInt64
	err := conn.QueryRowContext(ctx, `SELECT
		count(*) FILTER (WHERE `+q+` IS NOT NULL AND NOT regexp_full_match(`+q+`, '-?[0-9]+(\.[0-9]+)?')),
		count(*) FILTER (WHERE `+q+` IS NOT NULL AND TRY_CAST(`+q+` AS BIGINT) IS NULL),
		max(length(split_part(ltrim(`+q+`, '-'), '.', 1))),
		max(CASE WHEN contains(`+q+`, '.') THEN length(split_part(`+q+`, '.', 2)) ELSE 0 END)
		FROM `+stagingTable).Scan(&bad, &wide, &intDigits, &scale)
	if err != nil {
		return "", fmt.Errorf("sizing numeric column %q: %w", col, err)
	}
	if integer && wide == 0 {
		return "BIGINT", nil
	}
	p := intDigits.Int64 + scale.Int64
	if bad > 0 || !intDigits.Valid || p > 38 {
		return "DOUBLE", nil
	}
	return fmt.Sprintf("DECIMAL(%d,%d)", min(max(p, 18), 38), scale.Int64), nil
}

// duckdbNative are DuckDB types a DuckDB warehouse column keeps as is.
var duckdbNative = map[string]bool{
	"TINYINT": true, "SMALLINT": true, "INTEGER": true, "UTINYINT": true, "USMALLINT": true, "UINTEGER": true,
	"FLOAT": true,
}

// planColumn decides how a warehouse column is staged and stored. Values
// arrive as the warehouse drivers render them (RFC 3339 timestamps, dates
// as text, exact decimals as text or float64) and are turned back into
// typed DuckDB values here.
func planColumn(c warehouse.Column, whType string) stageCol {
	native := strings.ToUpper(c.NativeType)
	sc := stageCol{name: c.Name, stage: "VARCHAR", conv: toText}
	switch c.Type {
	case warehouse.TypeBoolean:
		sc.stage, sc.conv = "BOOLEAN", toBool
	case warehouse.TypeInteger:
		switch {
		case native == "HUGEINT" || native == "UHUGEINT" || native == "UBIGINT":
			// Parquet has no 128-bit integer (DuckDB would write DOUBLE):
			// staged as text, stored as BIGINT when every value fits.
			sc.final = "hugeint"
		default:
			sc.stage, sc.conv = "BIGINT", toInt
			if whType == warehouse.TypeDuckDB && duckdbNative[native] {
				sc.final = native
			}
		}
	case warehouse.TypeNumber:
		switch {
		case native == "FLOAT" || native == "DOUBLE" || native == "FLOAT4" || native == "FLOAT8":
			sc.stage, sc.conv = "DOUBLE", toFloat
			if whType == warehouse.TypeDuckDB && native == "FLOAT" {
				sc.final = native
			}
		case strings.HasPrefix(native, "DECIMAL"):
			sc.final = native
		default:
			sc.final = "numeric"
		}
	case warehouse.TypeTimestamp:
		sc.stage, sc.conv = "TIMESTAMP", toTime(time.RFC3339Nano)
		switch native {
		case "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S":
			sc.stage = native
		}
	case warehouse.TypeDate:
		sc.stage, sc.conv = "DATE", toTime(time.DateOnly)
	case warehouse.TypeBytes:
		sc.stage, sc.conv = "BLOB", toBytes
	case warehouse.TypeString:
		if native == "UUID" {
			sc.final = native // Parquet has UUIDs; the text reads the same
		}
	}
	return sc
}

func toBool(v any) (driver.Value, error) {
	if b, ok := v.(bool); ok {
		return b, nil
	}
	return nil, fmt.Errorf("%T %v is not a boolean", v, v)
}

func toInt(v any) (driver.Value, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case json.Number:
		return x.Int64()
	case string:
		return strconv.ParseInt(x, 10, 64)
	}
	return nil, fmt.Errorf("%T %v is not an integer", v, v)
}

func toFloat(v any) (driver.Value, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case string: // NaN, Infinity
		return strconv.ParseFloat(x, 64)
	}
	return nil, fmt.Errorf("%T %v is not a number", v, v)
}

func toText(v any) (driver.Value, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case bool:
		return strconv.FormatBool(x), nil
	case json.Number:
		return x.String(), nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

func toTime(layout string) func(any) (driver.Value, error) {
	return func(v any) (driver.Value, error) {
		switch x := v.(type) {
		case time.Time:
			return x.UTC(), nil
		case string:
			t, err := time.Parse(layout, x)
			if err != nil {
				return nil, fmt.Errorf("%q cannot be stored as a %s", x, map[bool]string{true: "date", false: "timestamp"}[layout == time.DateOnly])
			}
			return t.UTC(), nil
		}
		return nil, fmt.Errorf("%T %v is not a time", v, v)
	}
}

func toBytes(v any) (driver.Value, error) {
	if s, ok := v.(string); ok {
		return base64.StdEncoding.DecodeString(s)
	}
	return nil, fmt.Errorf("%T is not base64 bytes", v)
}
