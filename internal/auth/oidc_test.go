package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/config"
)

// testIssuer is an OIDC issuer served in the test: discovery and a JWKS
// with one RSA key; tokens are signed in the test.
type testIssuer struct {
	URL  string
	key  *rsa.PrivateKey
	down atomic.Bool // answer 503 to everything
}

const testClientID = "millrace-ui"

func newTestIssuer(t *testing.T) *testIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	iss := &testIssuer{key: key}
	s := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: "k1", Algorithm: oidc.RS256}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if iss.down.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.SetIssuer(srv.URL)
	iss.URL = srv.URL
	return iss
}

// token signs claims (iss, aud, sub and a one-hour exp unless set) with
// key, or the issuer's key if nil.
func (i *testIssuer) token(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": i.URL, "aud": testClientID, "sub": "u-1", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		key = i.key
	}
	return oidctest.SignIDToken(key, "k1", oidc.RS256, string(b))
}

func oidcAuth(t *testing.T, iss *testIssuer, defaultRole string) *Authenticator {
	t.Helper()
	a, _, _ := newTestAuth(t, func(c *config.Auth) {
		c.OIDCIssuer, c.OIDCClientID, c.OIDCDefaultRole = iss.URL, testClientID, defaultRole
	})
	a.now = time.Now // go-oidc checks expiry against the real clock
	return a
}

// The id_token refusals the issue asks for, and a valid login whose role
// is the highest one the roles claim names.
func TestOIDCLogin(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	a := oidcAuth(t, iss, "viewer")
	ctx := t.Context()

	out, err := a.Login(ctx, api.LoginRequest{IDToken: iss.token(t, nil, map[string]any{
		"email": "ada@example.com", "name": "Ada", "roles": []string{"viewer", "operator", "worker"}})})
	if err != nil {
		t.Fatal(err)
	}
	if out.User.UserID != "u-1" || out.User.Email != "ada@example.com" || out.User.DisplayName != "Ada" || out.User.Roles[0] != api.RoleOperator {
		t.Fatalf("login = %+v; want u-1 as operator (the highest role named; worker is never granted)", out)
	}
	if d := time.Until(out.ExpiresAt); d < 7*time.Hour || d > 8*time.Hour+time.Minute {
		t.Fatalf("session ends in %v; want the 8h session TTL", d)
	}
	p, err := a.Authenticate(ctx, out.SessionToken)
	if err != nil || p.Role != api.RoleOperator || p.Subject != "u-1" {
		t.Fatalf("the session: %+v, %v", p, err)
	}

	// No role named: OIDC_DEFAULT_ROLE.
	out, err = a.Login(ctx, api.LoginRequest{IDToken: iss.token(t, nil, map[string]any{"sub": "u-2"})})
	if err != nil || out.User.Roles[0] != api.RoleViewer {
		t.Fatalf("login without roles = %+v, %v; want viewer", out, err)
	}

	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"expired":         iss.token(t, nil, map[string]any{"exp": time.Now().Add(-time.Minute).Unix(), "iat": time.Now().Add(-time.Hour).Unix()}),
		"wrong audience":  iss.token(t, nil, map[string]any{"aud": "someone-else"}),
		"wrong signature": iss.token(t, other, nil),
		"wrong issuer":    iss.token(t, nil, map[string]any{"iss": "https://evil.example.com"}),
		"not a JWT":       "not-a-jwt",
	} {
		_, err := a.Login(ctx, api.LoginRequest{IDToken: tok})
		if e, ok := apierr.As(err); !ok || e.Code != apierr.Unauthenticated || e.Status() != http.StatusUnauthorized {
			t.Errorf("%s id_token: %v; want 401 unauthenticated", name, err)
		}
	}
}

// With OIDC_DEFAULT_ROLE=none a user whose token names no role is refused.
func TestOIDCDefaultRoleNone(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	a := oidcAuth(t, iss, "none")
	_, err := a.Login(t.Context(), api.LoginRequest{IDToken: iss.token(t, nil, map[string]any{"roles": "guest"})})
	if !isCode(err, apierr.Forbidden) {
		t.Fatalf("no Millrace role, default none: %v; want forbidden", err)
	}
	out, err := a.Login(t.Context(), api.LoginRequest{IDToken: iss.token(t, nil, map[string]any{"roles": "admin"})})
	if err != nil || out.User.Roles[0] != api.RoleAdmin {
		t.Fatalf("roles \"admin\" as a string: %+v, %v", out, err)
	}
}

// The issuer is discovered on the first login, and again after a failed
// discovery: a server outlives its identity provider's downtime.
func TestOIDCIssuerDownAtFirstLogin(t *testing.T) {
	t.Parallel()
	iss := newTestIssuer(t)
	a := oidcAuth(t, iss, "viewer")
	iss.down.Store(true)
	tok := iss.token(t, nil, nil)
	if _, err := a.Login(t.Context(), api.LoginRequest{IDToken: tok}); !isCode(err, apierr.Unavailable) {
		t.Fatalf("issuer down: %v; want unavailable", err)
	}
	iss.down.Store(false)
	if _, err := a.Login(t.Context(), api.LoginRequest{IDToken: tok}); err != nil {
		t.Fatalf("issuer back: %v", err)
	}
}

func TestClaimStrings(t *testing.T) {
	t.Parallel()
	all := map[string]json.RawMessage{
		"roles":        json.RawMessage(`["a","b"]`),
		"groups":       json.RawMessage(`"x y,z"`),
		"realm_access": json.RawMessage(`{"roles":["admin"]}`),
		"odd":          json.RawMessage(`7`),
	}
	for name, want := range map[string][]string{"roles": {"a", "b"}, "groups": {"x", "y", "z"}, "realm_access.roles": {"admin"}, "odd": nil, "missing": nil} {
		got := claimStrings(all, name)
		if len(got) != len(want) {
			t.Errorf("%s: %v; want %v", name, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: %v; want %v", name, got, want)
			}
		}
	}
}
