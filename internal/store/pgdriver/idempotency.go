package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

func (q querier) IdempotencyGet(ctx context.Context, scope, key string) (store.IdempotencyKey, error) {
	k := store.IdempotencyKey{Scope: scope, Key: key}
	var answer string
	err := q.db.QueryRow(ctx, `SELECT request_hash, result_id, answer, created_at FROM idempotency_keys
		WHERE scope = $1 AND key = $2`, scope, key).Scan(&k.RequestHash, &k.ResultID, &answer, &k.CreatedAt)
	if err != nil {
		return store.IdempotencyKey{}, notFound(err, fmt.Sprintf("idempotency key %q (%s)", key, scope))
	}
	k.Answer, k.CreatedAt = []byte(answer), k.CreatedAt.UTC()
	return k, nil
}

// IdempotencyInsert: the upsert's WHERE lets only an expired row be
// replaced; a live one leaves the statement with no row affected. A
// concurrent insert of the same key waits for the first transaction and
// then sees its row (ON CONFLICT's arbiter checks committed rows).
func (t *tx) IdempotencyInsert(ctx context.Context, k store.IdempotencyKey, expiredBefore time.Time) (bool, error) {
	tag, err := t.tx.Exec(ctx, `INSERT INTO idempotency_keys (scope, key, request_hash, result_id, answer, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, result_id = EXCLUDED.result_id,
			answer = EXCLUDED.answer, created_at = EXCLUDED.created_at
		WHERE idempotency_keys.created_at < $7`,
		k.Scope, k.Key, k.RequestHash, k.ResultID, string(k.Answer), tsOrNow(k.CreatedAt), ts(expiredBefore))
	if err != nil {
		return false, fmt.Errorf("pgdriver: insert idempotency key %q (%s): %w", k.Key, k.Scope, err)
	}
	return tag.RowsAffected() == 1, nil
}

func (t *tx) IdempotencyPurge(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	tag, err := t.tx.Exec(ctx, `DELETE FROM idempotency_keys WHERE (scope, key) IN (
		SELECT scope, key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)`, ts(before), limit)
	if err != nil {
		return 0, fmt.Errorf("pgdriver: purge idempotency keys: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
