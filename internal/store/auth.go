package store

import (
	"context"
	"time"
)

// Token kinds: an API token made by `millrace token create`, or a login
// session (an OIDC id_token or an API token exchanged at /api/auth/login).
const (
	TokenAPI     = "api"
	TokenSession = "session"
)

// AuthToken is an API token or a session. Only Hash (hex SHA-256 of the
// secret) is stored; the secret itself is shown once when it is made.
type AuthToken struct {
	ID         int64
	Kind       string // TokenAPI | TokenSession
	Name       string
	Role       string // admin | operator | viewer | worker
	Subject    string // a session's user: the OIDC subject, or "token:<id>"
	Email      string
	Hash       string
	CreatedBy  string
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// AuthQuerier reads tokens and sessions.
type AuthQuerier interface {
	// AuthTokenByHash finds a token or session by the hash of its secret,
	// revoked and expired ones included (the caller decides); ErrNotFound
	// if none.
	AuthTokenByHash(ctx context.Context, hash string) (AuthToken, error)
	// AuthTokenGet reads one by id; ErrNotFound if none.
	AuthTokenGet(ctx context.Context, id int64) (AuthToken, error)
	// AuthTokenList lists one kind by id asc, revoked ones included.
	AuthTokenList(ctx context.Context, kind string) ([]AuthToken, error)
}

// AuthTx writes tokens and sessions.
type AuthTx interface {
	AuthTokenInsert(ctx context.Context, t AuthToken) error
	// AuthTokenRevoke sets revoked_at if it is not set; false when the
	// token was already revoked. ErrNotFound if there is no such id.
	AuthTokenRevoke(ctx context.Context, id int64, now time.Time) (bool, error)
	// AuthTokenTouch records a use (last_used_at).
	AuthTokenTouch(ctx context.Context, id int64, now time.Time) error
	// AuthSessionsPurge deletes up to limit sessions (kind TokenSession
	// only, never API tokens) that ended before before: expires_at or
	// revoked_at earlier than before. It returns how many it deleted.
	AuthSessionsPurge(ctx context.Context, before time.Time, limit int) (int, error)
}
