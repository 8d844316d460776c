//go:build cgo

package tools

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"slices"
	"strings"

	duckdb "github.com/duckdb/duckdb-go/v2"
	"github.com/millrace/millrace/internal/sqlvalue"
)

// duckdbExec opens the database, attaches, and runs the statements. On
// failure it names the stage that failed.
func duckdbExec(ctx context.Context, database string, secrets []duckdbSecret, attach []duckdbAttachment, stmts []string) (*sqlResult, string, error) {
	// File databases are shared through the driver's instance cache, so
	// concurrent runs on one file in this process do not fight over its lock.
	connector, err := duckdb.NewConnector(database, nil)
	if err != nil {
		return nil, "opening database " + database, err
	}
	db := sql.OpenDB(connector)
	defer db.Close() // also closes the connector
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, "opening database " + database, err
	}
	defer conn.Close()

	for _, s := range secrets {
		if err := duckdbCreateSecret(ctx, conn, s); err != nil {
			return nil, fmt.Sprintf("creating %s secret %q", s.typ, s.name), err
		}
	}
	for _, a := range attach {
		if err := duckdbAttach(ctx, conn, a); err != nil {
			return nil, "attaching " + a.describe(), err
		}
	}
	res := &sqlResult{}
	for i, stmt := range stmts {
		if err := duckdbRun(ctx, conn, stmt, res); err != nil {
			return nil, fmt.Sprintf("statement %d of %d", i+1, len(stmts)), err
		}
	}
	return res, "", nil
}

// duckdbSecretExtension is the extension each secret type lives in.
var duckdbSecretExtension = map[string]string{"postgres": "postgres", "gcs": "httpfs", "s3": "httpfs"}

// duckdbCreateSecret loads the secret type's extension (LOAD never
// downloads) and creates the secret. DuckDB's own error may quote the
// statement, which holds the secret, so it is not passed on.
func duckdbCreateSecret(ctx context.Context, conn *sql.Conn, s duckdbSecret) error {
	ext := duckdbSecretExtension[s.typ]
	if _, err := conn.ExecContext(ctx, "LOAD "+ext); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &Error{Kind: "duckdb", Message: fmt.Sprintf(
			"auth secret %q (%s) needs DuckDB's %s extension, which is not installed on this worker; install it once where the worker runs (duckdb -c 'INSTALL %s')",
			s.name, s.typ, ext, ext)}
	}
	if _, err := conn.ExecContext(ctx, s.stmt); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &Error{Kind: "duckdb", Message: fmt.Sprintf("auth secret %q (%s) was refused by DuckDB; check the credential's fields", s.name, s.typ)}
	}
	return nil
}

func duckdbAttach(ctx context.Context, conn *sql.Conn, a duckdbAttachment) error {
	target, opts := a.path, []string{}
	if a.postgres != "" {
		// LOAD never downloads: it fails at once when the extension is
		// not installed, instead of reaching for the network mid-run.
		if _, err := conn.ExecContext(ctx, "LOAD postgres"); err != nil {
			if ctx.Err() != nil {
				return err
			}
			return &Error{Kind: "duckdb", Message: fmt.Sprintf(
				"attaching postgres as %q needs DuckDB's postgres extension, which is not installed on this worker (%v); "+
					"install it once where the worker runs (duckdb -c 'INSTALL postgres') or query PostgreSQL with the postgres tool", a.alias, firstLine(err))}
		}
		target = a.postgres
		if !strings.Contains(target, "://") && !strings.Contains(target, "=") {
			dsn, err := credentialDSN(ctx, "duckdb", target)
			if err != nil {
				return err
			}
			target = dsn
		}
		opts = append(opts, "TYPE postgres")
	}
	if a.readOnly {
		opts = append(opts, "READ_ONLY")
	}
	stmt := "ATTACH " + sqlString(target)
	if a.alias != "" {
		stmt += " AS " + sqlIdent(a.alias)
	}
	if len(opts) > 0 {
		stmt += " (" + strings.Join(opts, ", ") + ")"
	}
	_, err := conn.ExecContext(ctx, stmt)
	return err
}

// duckdbRowTypes are the statement kinds whose result is data rather than
// a status. INSERT, UPDATE and DELETE join them when they have RETURNING.
var duckdbRowTypes = []duckdb.StmtType{
	duckdb.STATEMENT_TYPE_SELECT, duckdb.STATEMENT_TYPE_EXPLAIN, duckdb.STATEMENT_TYPE_PRAGMA,
	duckdb.STATEMENT_TYPE_CALL, duckdb.STATEMENT_TYPE_EXECUTE, duckdb.STATEMENT_TYPE_RELATION,
	duckdb.STATEMENT_TYPE_LOGICAL_PLAN,
}

// duckdbRun runs one statement and folds its outcome into res. DuckDB
// reports writes as a single "Count" column; those add to rows_affected.
func duckdbRun(ctx context.Context, conn *sql.Conn, stmt string, res *sqlResult) error {
	return conn.Raw(func(dc any) error {
		prepared, err := dc.(driver.ConnPrepareContext).PrepareContext(ctx, stmt)
		if err != nil {
			return err
		}
		defer prepared.Close()
		ds := prepared.(*duckdb.Stmt)
		typ, err := ds.StatementType()
		if err != nil {
			return err
		}
		rows, err := ds.QueryContext(ctx, nil)
		if err != nil {
			return err
		}
		defer rows.Close()
		cols := rows.Columns()
		isCount := len(cols) == 1 && cols[0] == "Count"
		returnsRows := len(cols) > 0 && (slices.Contains(duckdbRowTypes, typ) ||
			(!isCount && slices.Contains([]duckdb.StmtType{duckdb.STATEMENT_TYPE_INSERT,
				duckdb.STATEMENT_TYPE_UPDATE, duckdb.STATEMENT_TYPE_DELETE}, typ)))
		typeNames := make([]string, len(cols))
		if tn, ok := rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
			for i := range cols {
				typeNames[i] = tn.ColumnTypeDatabaseTypeName(i)
			}
		}
		var out []any
		dest := make([]driver.Value, len(cols))
		for {
			if err := rows.Next(dest); err == io.EOF {
				break
			} else if err != nil {
				return err
			}
			if !returnsRows {
				if isCount {
					if n, ok := dest[0].(int64); ok {
						res.affected += n
					}
				}
				continue
			}
			row := make(map[string]any, len(cols))
			for i, c := range cols {
				row[c] = sqlvalue.FromDuckDB(typeNames[i], dest[i])
			}
			out = append(out, row)
		}
		if returnsRows {
			res.columns, res.rows = cols, out
		}
		return nil
	})
}
