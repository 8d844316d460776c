package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// Secret prefixes: they tell a leaked secret's kind at a glance (and let
// secret scanners find them).
const (
	APIPrefix     = "mrt_"
	SessionPrefix = "mrs_"
)

// NewSecret returns a fresh secret of kind (store.TokenAPI or
// store.TokenSession): a prefix and 256 random bits.
func NewSecret(kind string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	p := APIPrefix
	if kind == store.TokenSession {
		p = SessionPrefix
	}
	return p + base64.RawURLEncoding.EncodeToString(b)
}

// Hash is what the store keeps of a secret: hex SHA-256. A secret has 256
// random bits, so a fast hash is safe (no dictionary to try) and a lookup
// by hash stays an index probe.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// CreateToken makes an API token and stores its hash; the reply holds the
// secret, which is never shown again. It needs only the store, so
// `millrace token create` can bootstrap the first admin token straight into
// the database.
func CreateToken(ctx context.Context, st *store.Store, gen *ids.Generator, role, name, createdBy string, expires *time.Time) (api.TokenCreated, error) {
	if !ValidRole(role) {
		return api.TokenCreated{}, fmt.Errorf("role %q: want one of %s", role, strings.Join(Roles, ", "))
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	if expires != nil && !expires.After(now) {
		return api.TokenCreated{}, fmt.Errorf("expiry %s is in the past", expires.Format(time.RFC3339))
	}
	secret := NewSecret(store.TokenAPI)
	row := store.AuthToken{ID: gen.Next(), Kind: store.TokenAPI, Name: name, Role: role, Hash: Hash(secret),
		CreatedBy: createdBy, CreatedAt: now, ExpiresAt: expires}
	if err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error { return tx.AuthTokenInsert(ctx, row) }); err != nil {
		return api.TokenCreated{}, err
	}
	return api.TokenCreated{Token: TokenOf(row), Secret: secret}, nil
}

// ListTokens lists the API tokens, revoked ones included.
func ListTokens(ctx context.Context, st *store.Store) ([]api.Token, error) {
	rows, err := store.ReadValue(ctx, st, func(q store.Querier) ([]store.AuthToken, error) {
		return q.AuthTokenList(ctx, store.TokenAPI)
	})
	if err != nil {
		return nil, err
	}
	out := make([]api.Token, len(rows))
	for i := range rows {
		out[i] = TokenOf(rows[i])
	}
	return out, nil
}

// Errors of RevokeToken: an unknown id or name, or a name several live
// tokens share.
var (
	ErrTokenNotFound  = errors.New("no such token")
	ErrTokenAmbiguous = errors.New("ambiguous token name")
)

// RevokeToken revokes the API token with this id, or else the only live
// one with this name, and the sessions logins with it opened. Revoking
// twice is not an error.
func RevokeToken(ctx context.Context, st *store.Store, idOrName string) (api.Token, error) {
	t, _, err := revokeToken(ctx, st, idOrName)
	return t, err
}

// revokeToken is RevokeToken; it also returns the ids of the sessions it
// ended.
func revokeToken(ctx context.Context, st *store.Store, idOrName string) (api.Token, []int64, error) {
	list, err := store.ReadValue(ctx, st, func(q store.Querier) ([]store.AuthToken, error) {
		return q.AuthTokenList(ctx, store.TokenAPI)
	})
	if err != nil {
		return api.Token{}, nil, err
	}
	var match []store.AuthToken
	id, idErr := strconv.ParseInt(idOrName, 10, 64)
	for _, t := range list {
		if idErr == nil && t.ID == id {
			match = []store.AuthToken{t}
			break
		}
		if t.Name == idOrName && t.RevokedAt == nil {
			match = append(match, t)
		}
	}
	switch len(match) {
	case 0:
		return api.Token{}, nil, fmt.Errorf("%w: %q (list them with: millrace token list)", ErrTokenNotFound, idOrName)
	case 1:
	default:
		return api.Token{}, nil, fmt.Errorf("%w: %d live tokens are named %q: revoke one by its id (millrace token list)", ErrTokenAmbiguous, len(match), idOrName)
	}
	t := match[0]
	now := time.Now().UTC().Truncate(time.Microsecond)
	// A session opened with the token must not outlive it.
	sessions, err := store.ReadValue(ctx, st, func(q store.Querier) ([]store.AuthToken, error) {
		return q.AuthTokenList(ctx, store.TokenSession)
	})
	if err != nil {
		return api.Token{}, nil, err
	}
	var ended []int64
	for _, s := range sessions {
		if s.Subject == "token:"+strconv.FormatInt(t.ID, 10) && s.RevokedAt == nil {
			ended = append(ended, s.ID)
		}
	}
	err = st.Do(ctx, t.ID, func(ctx context.Context, tx store.Tx) error {
		for _, id := range append([]int64{t.ID}, ended...) {
			if _, err := tx.AuthTokenRevoke(ctx, id, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return api.Token{}, nil, err
	}
	if t.RevokedAt == nil {
		t.RevokedAt = &now
	}
	return TokenOf(t), ended, nil
}

// TokenOf converts a stored token to its wire form (never the hash).
func TokenOf(t store.AuthToken) api.Token {
	return api.Token{ID: t.ID, Kind: t.Kind, Name: t.Name, Role: t.Role, Subject: t.Subject, Email: t.Email,
		CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt}
}
