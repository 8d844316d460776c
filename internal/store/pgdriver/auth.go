package pgdriver

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/store"
)

const authCols = "id, kind, name, role, subject, email, hash, created_by, created_at, expires_at, last_used_at, revoked_at"

func scanAuthToken(row pgx.Row) (store.AuthToken, error) {
	var t store.AuthToken
	err := row.Scan(&t.ID, &t.Kind, &t.Name, &t.Role, &t.Subject, &t.Email, &t.Hash, &t.CreatedBy,
		&t.CreatedAt, &t.ExpiresAt, &t.LastUsedAt, &t.RevokedAt)
	t.CreatedAt = t.CreatedAt.UTC()
	t.ExpiresAt, t.LastUsedAt, t.RevokedAt = utcPtr(t.ExpiresAt), utcPtr(t.LastUsedAt), utcPtr(t.RevokedAt)
	return t, err
}

func (q querier) AuthTokenByHash(ctx context.Context, hash string) (store.AuthToken, error) {
	t, err := scanAuthToken(q.db.QueryRow(ctx, "SELECT "+authCols+" FROM auth_tokens WHERE hash = $1", hash))
	if err != nil {
		return store.AuthToken{}, notFound(err, "token")
	}
	return t, nil
}

func (q querier) AuthTokenGet(ctx context.Context, id int64) (store.AuthToken, error) {
	t, err := scanAuthToken(q.db.QueryRow(ctx, "SELECT "+authCols+" FROM auth_tokens WHERE id = $1", id))
	if err != nil {
		return store.AuthToken{}, notFound(err, fmt.Sprintf("token %d", id))
	}
	return t, nil
}

func (q querier) AuthTokenList(ctx context.Context, kind string) ([]store.AuthToken, error) {
	rows, err := q.db.Query(ctx, "SELECT "+authCols+" FROM auth_tokens WHERE kind = $1 ORDER BY id", kind)
	list, err := collect(rows, err, scanAuthToken)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list %s tokens: %w", kind, err)
	}
	return list, nil
}

func (t *tx) AuthTokenInsert(ctx context.Context, a store.AuthToken) error {
	_, err := t.tx.Exec(ctx, "INSERT INTO auth_tokens ("+authCols+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
		a.ID, a.Kind, a.Name, a.Role, a.Subject, a.Email, a.Hash, a.CreatedBy, tsOrNow(a.CreatedAt),
		tsPtrArg(a.ExpiresAt), tsPtrArg(a.LastUsedAt), tsPtrArg(a.RevokedAt))
	if err != nil {
		return fmt.Errorf("pgdriver: insert token %d: %w", a.ID, err)
	}
	return nil
}

func (t *tx) AuthTokenRevoke(ctx context.Context, id int64, now time.Time) (bool, error) {
	var revoked bool
	err := t.tx.QueryRow(ctx, `UPDATE auth_tokens SET revoked_at = COALESCE(revoked_at, $2)
		WHERE id = $1 RETURNING revoked_at = $2`, id, tsOrNow(now)).Scan(&revoked)
	if err != nil {
		return false, notFound(err, fmt.Sprintf("token %d", id))
	}
	return revoked, nil
}

func (t *tx) AuthTokenTouch(ctx context.Context, id int64, now time.Time) error {
	_, err := t.tx.Exec(ctx, "UPDATE auth_tokens SET last_used_at = $2 WHERE id = $1", id, tsOrNow(now))
	if err != nil {
		return fmt.Errorf("pgdriver: touch token %d: %w", id, err)
	}
	return nil
}

func (t *tx) AuthSessionsPurge(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	tag, err := t.tx.Exec(ctx, `DELETE FROM auth_tokens WHERE id IN (
		SELECT id FROM auth_tokens WHERE kind = $1 AND (expires_at < $2 OR revoked_at < $2) ORDER BY id LIMIT $3)`,
		store.TokenSession, ts(before), limit)
	if err != nil {
		return 0, fmt.Errorf("pgdriver: purge sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
