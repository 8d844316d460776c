package sqlitedriver

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/store"
)

const authCols = "id, kind, name, role, subject, email, hash, created_by, created_at, expires_at, last_used_at, revoked_at"

func scanAuthToken(row scanner) (store.AuthToken, error) {
	var t store.AuthToken
	var created int64
	var expires, used, revoked sql.NullInt64
	if err := row.Scan(&t.ID, &t.Kind, &t.Name, &t.Role, &t.Subject, &t.Email, &t.Hash, &t.CreatedBy,
		&created, &expires, &used, &revoked); err != nil {
		return store.AuthToken{}, err
	}
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt, t.LastUsedAt, t.RevokedAt = fromNullMicros(expires), fromNullMicros(used), fromNullMicros(revoked)
	return t, nil
}

func (q *queries) AuthTokenByHash(ctx context.Context, hash string) (store.AuthToken, error) {
	t, err := scanAuthToken(q.queryRow(ctx, "SELECT "+authCols+" FROM auth_tokens WHERE hash = ?", hash))
	if err != nil {
		return store.AuthToken{}, notFound(err, "token")
	}
	return t, nil
}

func (q *queries) AuthTokenGet(ctx context.Context, id int64) (store.AuthToken, error) {
	t, err := scanAuthToken(q.queryRow(ctx, "SELECT "+authCols+" FROM auth_tokens WHERE id = ?", id))
	if err != nil {
		return store.AuthToken{}, notFound(err, "token %d", id)
	}
	return t, nil
}

func (q *queries) AuthTokenList(ctx context.Context, kind string) ([]store.AuthToken, error) {
	rows, err := q.query(ctx, "SELECT "+authCols+" FROM auth_tokens WHERE kind = ? ORDER BY id", kind)
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: list %s tokens: %w", kind, err)
	}
	return collect(rows, scanAuthToken, "list tokens")
}

func (t *tx) AuthTokenInsert(ctx context.Context, a store.AuthToken) error {
	_, err := t.exec(ctx, "INSERT INTO auth_tokens ("+authCols+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		a.ID, a.Kind, a.Name, a.Role, a.Subject, a.Email, a.Hash, a.CreatedBy, micros(nowIfZero(a.CreatedAt)),
		microsPtr(a.ExpiresAt), microsPtr(a.LastUsedAt), microsPtr(a.RevokedAt))
	if err != nil {
		return fmt.Errorf("sqlitedriver: insert token %d: %w", a.ID, err)
	}
	return nil
}

func (t *tx) AuthTokenRevoke(ctx context.Context, id int64, now time.Time) (bool, error) {
	if _, err := t.AuthTokenGet(ctx, id); err != nil {
		return false, err
	}
	res, err := t.exec(ctx, "UPDATE auth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", micros(nowIfZero(now)), id)
	if err != nil {
		return false, fmt.Errorf("sqlitedriver: revoke token %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *tx) AuthTokenTouch(ctx context.Context, id int64, now time.Time) error {
	if _, err := t.exec(ctx, "UPDATE auth_tokens SET last_used_at = ? WHERE id = ?", micros(nowIfZero(now)), id); err != nil {
		return fmt.Errorf("sqlitedriver: touch token %d: %w", id, err)
	}
	return nil
}

func (t *tx) AuthSessionsPurge(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	b := micros(before)
	res, err := t.exec(ctx, `DELETE FROM auth_tokens WHERE id IN (
		SELECT id FROM auth_tokens WHERE kind = ? AND (expires_at < ? OR revoked_at < ?) ORDER BY id LIMIT ?)`,
		store.TokenSession, b, b, limit)
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: purge sessions: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}
