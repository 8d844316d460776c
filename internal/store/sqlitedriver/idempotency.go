package sqlitedriver

import (
	"context"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

func (q *queries) IdempotencyGet(ctx context.Context, scope, key string) (store.IdempotencyKey, error) {
	k := store.IdempotencyKey{Scope: scope, Key: key}
	var answer string
	var created int64
	err := q.queryRow(ctx, `SELECT request_hash, result_id, answer, created_at FROM idempotency_keys
		WHERE scope = ? AND key = ?`, scope, key).Scan(&k.RequestHash, &k.ResultID, &answer, &created)
	if err != nil {
		return store.IdempotencyKey{}, notFound(err, "idempotency key %q (%s)", key, scope)
	}
	k.Answer, k.CreatedAt = []byte(answer), fromMicros(created)
	return k, nil
}

// IdempotencyInsert: the upsert's WHERE lets only an expired row be
// replaced; SQLite's one writer orders concurrent inserts.
func (t *tx) IdempotencyInsert(ctx context.Context, k store.IdempotencyKey, expiredBefore time.Time) (bool, error) {
	res, err := t.exec(ctx, `INSERT INTO idempotency_keys (scope, key, request_hash, result_id, answer, created_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash, result_id = excluded.result_id,
			answer = excluded.answer, created_at = excluded.created_at
		WHERE idempotency_keys.created_at < ?`,
		k.Scope, k.Key, k.RequestHash, k.ResultID, string(k.Answer), micros(nowIfZero(k.CreatedAt)), micros(expiredBefore))
	if err != nil {
		return false, fmt.Errorf("sqlitedriver: insert idempotency key %q (%s): %w", k.Key, k.Scope, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *tx) IdempotencyPurge(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	res, err := t.exec(ctx, `DELETE FROM idempotency_keys WHERE rowid IN (
		SELECT rowid FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)`, micros(before), limit)
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: purge idempotency keys: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}
