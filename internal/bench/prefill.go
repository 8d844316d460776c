package bench

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Prefilling history (--prefill): the store gets N finished executions
// before the measured run, as if it had been running for a while.
//
// One real execution of the benchmark's playbook runs first, through the
// server and a worker like every other; its rows are the template. Then
// each table that holds rows of an execution (every table with an
// execution_id column: executions, events, commands, loops, ...) gets
// copies of the template's rows made by the database itself, one
// INSERT … SELECT per table per chunk over a generated series of copy
// numbers k, in one transaction per chunk. Copy k is the template moved
// k*shift milliseconds into the past:
//   - every id generated for the template (an integer column's value at or
//     above the template's execution_id: execution, event and command ids,
//     the revision) becomes id - k*shift<<22, which is the id the same
//     generator would have made k*shift ms earlier, so ids stay unique and
//     time-ordered, and older than anything the measured run makes;
//   - timestamps move by the same k*shift ms;
//   - text and JSON columns that spell one of those ids (a command_id is
//     "execution:step:event") get the new id spelled the same way;
//   - everything else (catalog id, claim token, statuses, results) is the
//     template's value, byte for byte.
//
// The copies go in from the oldest to the newest, in id order, as a real
// history would have been written, so the indexes grow as they would. The
// columns are read from the schema, so the copies follow the schema as it
// changes.

// idShift is the bit offset of the millisecond field in ids (internal/ids).
const idShift = 22

// prefillChunk is how many copies go in one transaction.
const prefillChunk = 10_000

type column struct {
	name, typ string
}

// prefillTables lists the tables with an execution_id column and their
// columns, in a fixed order with executions first.
func (d *db) prefillTables(ctx context.Context) (map[string][]column, []string, error) {
	var q string
	switch d.kind {
	case "postgres":
		q = `SELECT c.table_name, c.column_name, c.data_type
			FROM information_schema.columns c
			JOIN pg_class r ON r.relname = c.table_name
			JOIN pg_namespace n ON n.oid = r.relnamespace AND n.nspname = c.table_schema
			WHERE c.table_schema = current_schema() AND r.relkind IN ('r', 'p') AND NOT r.relispartition
			  AND c.table_name IN (SELECT table_name FROM information_schema.columns
			                       WHERE table_schema = current_schema() AND column_name = 'execution_id')
			ORDER BY c.table_name, c.ordinal_position`
	case "sqlite":
		q = `SELECT t.name, c.name, upper(c.type)
			FROM sqlite_master t, pragma_table_info(t.name) c
			WHERE t.type = 'table' AND t.name IN (SELECT t2.name FROM sqlite_master t2, pragma_table_info(t2.name) c2
			                                      WHERE t2.type = 'table' AND c2.name = 'execution_id')
			ORDER BY t.name, c.cid`
	}
	rows, err := d.sql.QueryContext(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	cols := map[string][]column{}
	var names []string
	for rows.Next() {
		var t string
		var c column
		if err := rows.Scan(&t, &c.name, &c.typ); err != nil {
			return nil, nil, err
		}
		if _, ok := cols[t]; !ok {
			names = append(names, t)
		}
		cols[t] = append(cols[t], c)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	// Executions first: a reader that finds events finds their execution.
	for i, n := range names {
		if n == "executions" {
			names[0], names[i] = names[i], names[0]
		}
	}
	return cols, names, nil
}

func (d *db) isInt(c column) bool {
	if d.kind == "postgres" {
		return c.typ == "bigint" || c.typ == "integer" || c.typ == "smallint"
	}
	return strings.Contains(c.typ, "INT")
}

func (d *db) isTime(c column) bool {
	if d.kind == "postgres" {
		return strings.HasPrefix(c.typ, "timestamp")
	}
	// SQLite stores times as INTEGER unix microseconds, named *_at.
	return d.isInt(c) && strings.HasSuffix(c.name, "_at")
}

func (d *db) isText(c column) bool {
	if d.kind == "postgres" {
		return c.typ == "text" || c.typ == "json" || c.typ == "jsonb" || c.typ == "character varying"
	}
	return c.typ == "TEXT" || c.typ == ""
}

// param is the n-th placeholder.
func (d *db) param(n int) string {
	if d.kind == "postgres" {
		return fmt.Sprintf("$%d::bigint", n)
	}
	return fmt.Sprintf("?%d", n)
}

// prefill stores copies more finished executions shaped like template (a
// finished execution's id), as described above, and calls done after each
// chunk with the copies made so far.
func (d *db) prefill(ctx context.Context, template int64, copies int, done func(int)) error {
	cols, tables, err := d.prefillTables(ctx)
	if err != nil {
		return fmt.Errorf("prefill: read the schema: %w", err)
	}
	// The ids generated for the template: integer values at or above its
	// execution id, in any of its rows.
	idSet := map[int64]bool{}
	texts := map[string][]string{} // table -> text values of the template's rows
	for _, t := range tables {
		var sel []string
		for _, c := range cols[t] {
			if d.isInt(c) && !d.isTime(c) || d.isText(c) {
				sel = append(sel, "CAST("+quoteIdent(c.name)+" AS TEXT)")
			}
		}
		rows, err := d.sql.QueryContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+quoteIdent(t)+" WHERE execution_id = "+d.param(1), template)
		if err != nil {
			return fmt.Errorf("prefill: read the template's %s: %w", t, err)
		}
		for rows.Next() {
			vals := make([]sql.NullString, len(sel))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return err
			}
			i := 0
			for _, c := range cols[t] {
				switch {
				case d.isInt(c) && !d.isTime(c):
					var v int64
					if _, err := fmt.Sscan(vals[i].String, &v); err == nil && vals[i].Valid && v >= template {
						idSet[v] = true
					}
					i++
				case d.isText(c):
					if vals[i].Valid {
						texts[t] = append(texts[t], vals[i].String)
					}
					i++
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if !idSet[template] {
		return fmt.Errorf("prefill: execution %d has no rows to copy", template)
	}
	var maxID int64
	for id := range idSet {
		maxID = max(maxID, id)
	}
	// shift ms apart: the copies' id ranges never overlap.
	shiftMS := (maxID-template)>>idShift + 1
	if (int64(copies)*shiftMS)<<idShift >= template {
		return fmt.Errorf("prefill: %d copies of an execution spanning %d ms reach before the id epoch; prefill fewer", copies, shiftMS)
	}

	stmts := make([]string, 0, len(tables))
	for _, t := range tables {
		stmts = append(stmts, d.copyStatement(t, cols[t], idSet, texts[t], shiftMS))
	}
	// From the oldest copy (k = copies) to the newest (k = 1).
	for hi := copies; hi >= 1; hi -= prefillChunk {
		lo := max(hi-prefillChunk+1, 1)
		if err := d.inTx(ctx, func(tx *sql.Tx) error {
			for i, q := range stmts {
				if _, err := tx.ExecContext(ctx, q, hi, lo, template); err != nil {
					return fmt.Errorf("prefill %s: %w", tables[i], err)
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if done != nil {
			done(copies - lo + 1)
		}
	}
	// As autovacuum and ANALYZE would have after a real history, so the
	// measured run neither plans on empty statistics nor pays for them.
	if d.kind == "postgres" {
		for _, t := range tables {
			if _, err := d.sql.ExecContext(ctx, "VACUUM (ANALYZE) "+quoteIdent(t)); err != nil {
				return fmt.Errorf("prefill: vacuum %s: %w", t, err)
			}
		}
	}
	return nil
}

func (d *db) inTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// copyStatement is the INSERT … SELECT that copies table t's template rows
// for k from $1 down to $2; $3 is the template's execution id.
func (d *db) copyStatement(t string, cols []column, ids map[int64]bool, texts []string, shiftMS int64) string {
	pg := d.kind == "postgres"
	k := "g.k"
	idDelta := fmt.Sprintf("(%s * %d)", k, shiftMS<<idShift)
	var names, exprs []string
	for _, c := range cols {
		col := "t." + quoteIdent(c.name)
		names = append(names, quoteIdent(c.name))
		switch {
		case d.isTime(c) && pg:
			exprs = append(exprs, fmt.Sprintf("%s - %s * interval '%d milliseconds'", col, k, shiftMS))
		case d.isTime(c):
			exprs = append(exprs, fmt.Sprintf("%s - %s * %d", col, k, shiftMS*1000))
		case d.isInt(c) && (!pg || c.typ == "bigint"):
			// Ids are bigint; smaller integer columns are counts.
			exprs = append(exprs, fmt.Sprintf("CASE WHEN %s >= %s THEN %s - %s ELSE %s END", col, d.param(3), col, idDelta, col))
		case d.isText(c):
			e := col
			if pg && c.typ != "text" && c.typ != "character varying" {
				e = col + "::text"
			}
			n := 0
			for id := range ids {
				s := fmt.Sprint(id)
				if containsAny(texts, s) {
					e = fmt.Sprintf("replace(%s, '%s', CAST(%d - %s AS TEXT))", e, s, id, idDelta)
					n++
				}
			}
			if n > 0 && pg && c.typ != "text" && c.typ != "character varying" {
				e = "(" + e + ")::" + c.typ
			} else if n == 0 {
				e = col
			}
			exprs = append(exprs, e)
		default:
			exprs = append(exprs, col)
		}
	}
	series := "generate_series($1::bigint, $2::bigint, -1) AS g(k)"
	with := ""
	if !pg {
		with = "WITH RECURSIVE g(k) AS (SELECT ?1 UNION ALL SELECT k - 1 FROM g WHERE k > ?2) "
		series = "g"
	}
	return fmt.Sprintf("%sINSERT INTO %s (%s) SELECT %s FROM %s AS t, %s WHERE t.execution_id = %s ORDER BY g.k DESC, t.%s",
		with, quoteIdent(t), strings.Join(names, ", "), strings.Join(exprs, ", "), quoteIdent(t), series, d.param(3), quoteIdent(cols[0].name))
}

func containsAny(texts []string, s string) bool {
	for _, t := range texts {
		if strings.Contains(t, s) {
			return true
		}
	}
	return false
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
