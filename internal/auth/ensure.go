package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// apiSecretChars is the length of an API secret after its prefix: 256
// random bits in unpadded base64url. Longer secrets are accepted too.
const apiSecretChars = 43

// CheckAPISecret reports whether secret has the form of an API token
// secret: the mrt_ prefix and at least 43 characters of A-Z a-z 0-9 - _
// (what NewSecret makes, and what a deployment may generate itself, e.g.
// Helm's randAlphaNum 43 after the prefix). The error says how to make one.
func CheckAPISecret(secret string) error {
	rest, ok := strings.CutPrefix(secret, APIPrefix)
	bad := !ok || len(rest) < apiSecretChars
	for _, c := range rest {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("not an API token secret: want %s followed by at least %d characters of A-Z a-z 0-9 - _ (256 random bits); "+
			"make one with: echo %s$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')", APIPrefix, apiSecretChars, APIPrefix)
	}
	return nil
}

// Ensured is what EnsureToken did with one secret.
type Ensured struct {
	Token api.Token
	Made  bool // false: the store already had it
}

// ErrTokenConflict: a secret to ensure is already stored with another
// role, as a session, or revoked. Ensuring it again cannot fix that; a new
// secret can.
var ErrTokenConflict = errors.New("token conflict")

// EnsureToken registers an API token whose secret the caller chose (a
// deployment's Secret) with role and name, unless the store already has
// that secret: then it leaves it alone, so running it again changes
// nothing. The token never expires; rotate by registering a new secret and
// revoking the old one.
func EnsureToken(ctx context.Context, st *store.Store, gen *ids.Generator, secret, role, name, createdBy string) (Ensured, error) {
	if !ValidRole(role) {
		return Ensured{}, fmt.Errorf("role %q: want one of %s", role, strings.Join(Roles, ", "))
	}
	if err := CheckAPISecret(secret); err != nil {
		return Ensured{}, err
	}
	hash := Hash(secret)
	existing := func() (Ensured, bool, error) {
		t, err := store.ReadValue(ctx, st, func(q store.Querier) (store.AuthToken, error) {
			return q.AuthTokenByHash(ctx, hash)
		})
		if errors.Is(err, store.ErrNotFound) {
			return Ensured{}, false, nil
		}
		if err != nil {
			return Ensured{}, false, err
		}
		switch {
		case t.Kind != store.TokenAPI:
			return Ensured{}, true, fmt.Errorf("%w: the secret for %s is a login session's: use another secret", ErrTokenConflict, name)
		case t.RevokedAt != nil:
			return Ensured{}, true, fmt.Errorf("%w: the secret for %s is token %d%s, revoked at %s: put a new secret in its place (it will be registered on the next run)",
				ErrTokenConflict, name, t.ID, quoted(t.Name), t.RevokedAt.UTC().Format(time.RFC3339))
		case t.Role != role:
			return Ensured{}, true, fmt.Errorf("%w: the secret for %s is already token %d%s of role %s, not %s: use a distinct secret per role",
				ErrTokenConflict, name, t.ID, quoted(t.Name), t.Role, role)
		}
		return Ensured{Token: TokenOf(t)}, true, nil
	}
	if e, found, err := existing(); found || err != nil {
		return e, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	row := store.AuthToken{ID: gen.Next(), Kind: store.TokenAPI, Name: name, Role: role, Hash: hash, CreatedBy: createdBy, CreatedAt: now}
	err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error { return tx.AuthTokenInsert(ctx, row) })
	if err != nil {
		// Another process registered the same secret meanwhile (the hash
		// is unique): that is the outcome we wanted.
		if e, found, rerr := existing(); found || rerr != nil {
			return e, rerr
		}
		return Ensured{}, err
	}
	return Ensured{Token: TokenOf(row), Made: true}, nil
}

func quoted(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" %q", name)
}
