package sqlitedriver

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

var _ store.Retention = (*Driver)(nil)

// RetentionLock implements store.Retention. One process writes a SQLite
// file, so there is nobody to exclude.
func (d *Driver) RetentionLock(context.Context) (func(), bool, error) {
	return func() {}, true, nil
}

// sqlRetentionDoomed is pgdriver's rule: ended before the cutoff, oldest
// first, and a child only once its parent's row is gone.
const sqlRetentionDoomed = `SELECT e.execution_id FROM executions e
WHERE e.ended_at IS NOT NULL AND e.ended_at < ? AND e.status <> 'running'
  AND (e.parent_execution_id = 0
       OR NOT EXISTS (SELECT 1 FROM executions p WHERE p.execution_id = e.parent_execution_id))
ORDER BY e.ended_at
LIMIT ?`

// RetentionDelete implements store.Retention. The batch is one BEGIN
// IMMEDIATE transaction on the writer connection: limit bounds how long it
// holds SQLite's single write lock, and writers queue behind it only that
// long.
func (d *Driver) RetentionDelete(ctx context.Context, cutoff time.Time, limit int) (store.RetentionBatch, error) {
	b, err := d.retentionDelete(ctx, cutoff, limit)
	if err != nil {
		return store.RetentionBatch{}, fmt.Errorf("sqlitedriver: retention: delete executions ended before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	return b, nil
}

func (d *Driver) retentionDelete(ctx context.Context, cutoff time.Time, limit int) (b store.RetentionBatch, err error) {
	tx, err := d.writer.BeginTx(ctx, nil)
	if err != nil {
		return b, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	doomed, err := queryInt64s(ctx, tx, sqlRetentionDoomed, micros(cutoff), limit)
	if err != nil || len(doomed) == 0 {
		if err == nil {
			err = tx.Commit()
		}
		return b, err
	}
	list, _ := json.Marshal(doomed) // []int64 always encodes
	in := "IN (SELECT value FROM json_each(?))"
	const refs = "IN (SELECT value FROM json_each(?1)) AND result LIKE ?2"
	rows, err := tx.QueryContext(ctx, `SELECT result FROM executions WHERE execution_id `+refs+`
UNION ALL SELECT result FROM commands WHERE execution_id `+refs+`
UNION ALL SELECT result FROM loops WHERE execution_id `+refs+`
UNION ALL SELECT result FROM events WHERE execution_id `+refs, string(list), store.BlobRefPattern)
	if err != nil {
		return b, err
	}
	var blobs []int64
	for rows.Next() {
		var r []byte
		if err := rows.Scan(&r); err != nil {
			_ = rows.Close()
			return b, err
		}
		if id, ok := store.BlobRef(r); ok {
			blobs = append(blobs, id)
		}
	}
	if err := rows.Close(); err != nil {
		return b, err
	}
	if err := rows.Err(); err != nil {
		return b, err
	}
	var hasOutbox bool
	if err := tx.QueryRowContext(ctx, "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").Scan(&hasOutbox); err != nil {
		return b, err
	}
	blobList, _ := json.Marshal(blobs)
	steps := []struct {
		sql  string
		arg  string
		n    *int64
		skip bool
	}{
		{"DELETE FROM blobs WHERE id " + in, string(blobList), &b.Blobs, len(blobs) == 0},
		{"DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM commands WHERE execution_id " + in + ")", string(list), nil, !hasOutbox},
		{"DELETE FROM commands WHERE execution_id " + in, string(list), &b.Commands, false},
		{"DELETE FROM loops WHERE execution_id " + in, string(list), &b.Loops, false},
		{"DELETE FROM events WHERE execution_id " + in, string(list), &b.Events, false},
		{"DELETE FROM executions WHERE execution_id " + in, string(list), &b.Executions, false},
	}
	for _, s := range steps {
		if s.skip {
			continue
		}
		res, err := tx.ExecContext(ctx, s.sql, s.arg)
		if err != nil {
			return b, err
		}
		if s.n != nil {
			if *s.n, err = res.RowsAffected(); err != nil {
				return b, err
			}
		}
	}
	return b, tx.Commit()
}

func queryInt64s(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
