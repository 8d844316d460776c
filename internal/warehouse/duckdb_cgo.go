//go:build cgo

package warehouse

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"

	duckdb "github.com/duckdb/duckdb-go/v2"
	"github.com/millrace/millrace/internal/sqlvalue"
)

// duckdbCancelCheckRows is how often the row loop checks for cancellation.
// DuckDB interrupts execution itself; this covers reading a finished result.
const duckdbCancelCheckRows = 1024

type duckdbDriver struct {
	db   *sql.DB
	path string
}

// openDuckDB opens the database once for the driver's lifetime, so a
// ":memory:" database keeps its tables between queries. File databases are
// shared through duckdb-go's instance cache, so two drivers on one file in
// a process do not fight over its lock.
func openDuckDB(_ context.Context, c Conn) (Driver, error) {
	connector, err := duckdb.NewConnector(c.URL, nil)
	if err != nil {
		return nil, &Error{Message: fmt.Sprintf("opening duckdb database %s: %v", c.URL, err)}
	}
	return &duckdbDriver{db: sql.OpenDB(connector), path: c.URL}, nil
}

func (d *duckdbDriver) Close() error { return d.db.Close() } // also closes the connector

func (d *duckdbDriver) Query(ctx context.Context, query string, onColumns func([]Column) error, onRow func([]any) error) error {
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return duckdbFail(ctx, d.path, err)
	}
	defer conn.Close()
	return QueryDuckDB(ctx, conn, d.path, query, onColumns, onRow)
}

// QueryDuckDB runs query on conn, a connection of a duckdb-go database, and
// streams its result as Driver.Query does, with the same column types and
// value conversion: the pre-aggregate engine serves through it, so an
// answer from a pre-aggregate reads exactly like one from a DuckDB
// warehouse. where names the database in errors.
func QueryDuckDB(ctx context.Context, conn *sql.Conn, where, query string, onColumns func([]Column) error, onRow func([]any) error) error {
	var callbackErr error
	err := conn.Raw(func(dc any) error {
		// The driver's own Rows give each value as DuckDB produced it, plus
		// the column type names, which database/sql would hide.
		rows, err := dc.(driver.QueryerContext).QueryContext(ctx, query, nil)
		if err != nil {
			return err
		}
		defer rows.Close()
		names := rows.Columns()
		cols := make([]Column, len(names))
		typeNames := make([]string, len(names))
		tn, _ := rows.(driver.RowsColumnTypeDatabaseTypeName)
		for i, name := range names {
			if tn != nil {
				typeNames[i] = tn.ColumnTypeDatabaseTypeName(i)
			}
			cols[i] = Column{Name: name, Type: duckdbPortableType(typeNames[i]), NativeType: typeNames[i]}
		}
		if callbackErr = onColumns(cols); callbackErr != nil {
			return callbackErr
		}
		dest := make([]driver.Value, len(names))
		row := make([]any, len(names))
		for n := 1; ; n++ {
			if n%duckdbCancelCheckRows == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			if err := rows.Next(dest); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			for i := range dest {
				row[i] = sqlvalue.FromDuckDB(typeNames[i], dest[i])
			}
			if callbackErr = onRow(row); callbackErr != nil {
				return callbackErr
			}
		}
	})
	if err != nil && !errors.Is(err, callbackErr) {
		return duckdbFail(ctx, where, err)
	}
	return err
}

func duckdbFail(ctx context.Context, where string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("duckdb: the query on %s was stopped: %w", where, ctx.Err())
	}
	var dbErr *duckdb.Error
	if errors.As(err, &dbErr) {
		return &Error{Message: dbErr.Msg, Code: duckdbErrorTypes[dbErr.Type],
			Retryable: dbErr.Type == duckdb.ErrorTypeTransaction}
	}
	return &Error{Message: fmt.Sprintf("duckdb %s: %v", where, err)}
}

// duckdbErrorTypes names the error kinds that DuckDB puts before its
// messages ("Catalog Error: ..."), for Error.Code.
var duckdbErrorTypes = map[duckdb.ErrorType]string{
	duckdb.ErrorTypeCatalog: "catalog", duckdb.ErrorTypeParser: "parser", duckdb.ErrorTypeBinder: "binder",
	duckdb.ErrorTypeConversion: "conversion", duckdb.ErrorTypeConstraint: "constraint",
	duckdb.ErrorTypeInterrupt: "interrupt", duckdb.ErrorTypeIO: "io", duckdb.ErrorTypeTransaction: "transaction",
	duckdb.ErrorTypeOutOfRange: "out_of_range", duckdb.ErrorTypeDivideByZero: "divide_by_zero",
	duckdb.ErrorTypeInvalidInput: "invalid_input", duckdb.ErrorTypeSyntax: "syntax",
}

// duckdbPortableType maps a DuckDB type name (as duckdb-go reports it) to a
// portable type.
func duckdbPortableType(name string) string {
	switch {
	case name == "BOOLEAN":
		return TypeBoolean
	case name == "TINYINT", name == "SMALLINT", name == "INTEGER", name == "BIGINT", name == "HUGEINT",
		name == "UTINYINT", name == "USMALLINT", name == "UINTEGER", name == "UBIGINT", name == "UHUGEINT":
		return TypeInteger
	case name == "FLOAT", name == "DOUBLE", strings.HasPrefix(name, "DECIMAL"):
		return TypeNumber
	case strings.HasPrefix(name, "TIMESTAMP"):
		return TypeTimestamp
	case name == "DATE":
		return TypeDate
	case name == "BLOB":
		return TypeBytes
	case name == "JSON", strings.HasSuffix(name, "]"), strings.HasPrefix(name, "STRUCT"),
		strings.HasPrefix(name, "MAP"), strings.HasPrefix(name, "UNION"):
		return TypeJSON
	}
	return TypeString // VARCHAR, UUID, TIME, INTERVAL, ENUM, ...
}
