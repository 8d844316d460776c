package auth

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
)

// testStore opens a fresh SQLite store with the migrations applied.
func testStore(t testing.TB) *store.Store {
	t.Helper()
	drv, err := sqlitedriver.Open(t.Context(), t.TempDir()+"/auth.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Migrate(t.Context()); err != nil {
		drv.Close()
		t.Fatal(err)
	}
	st := store.New(drv, store.Options{})
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// clock is a settable time for the authenticator.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestAuth(t testing.TB, mod func(*config.Auth)) (*Authenticator, *store.Store, *clock) {
	t.Helper()
	st := testStore(t)
	cfg := config.Auth{Mode: config.AuthTokens, CacheTTL: time.Hour, SessionTTL: 8 * time.Hour, OIDCRolesClaim: "roles", OIDCDefaultRole: "viewer"}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(st, ids.New(1), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	a.now = c.now
	return a, st, c
}

func tokenRow(t *testing.T, st *store.Store, id int64) store.AuthToken {
	t.Helper()
	row, err := store.ReadValue(t.Context(), st, func(q store.Querier) (store.AuthToken, error) { return q.AuthTokenGet(t.Context(), id) })
	if err != nil {
		t.Fatal(err)
	}
	return row
}

func wantUnauthenticated(t *testing.T, what string, err error) {
	t.Helper()
	if e, ok := apierr.As(err); !ok || e.Code != apierr.Unauthenticated || e != ErrUnauthenticated {
		t.Fatalf("%s: err = %v; want ErrUnauthenticated (one error for every refusal)", what, err)
	}
}

// A lookup is cached for the cache TTL: a token revoked behind this
// server's back still works until then, one revoked through it stops at
// once.
func TestAuthenticateCacheAndRevocation(t *testing.T) {
	t.Parallel()
	a, st, c := newTestAuth(t, nil)
	ctx := t.Context()
	tok, err := a.CreateToken(ctx, api.RoleOperator, "ci", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(ctx, tok.Secret)
	if err != nil || p.Role != api.RoleOperator || p.TokenID != tok.ID || p.Kind != store.TokenAPI || p.Name != "ci" {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	// Revoked in the store by someone else (another server, the CLI).
	if _, err := RevokeToken(ctx, st, "ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, tok.Secret); err != nil {
		t.Fatalf("within the cache TTL a revoked token still works here: %v", err)
	}
	c.add(time.Hour + time.Second)
	_, err = a.Authenticate(ctx, tok.Secret)
	wantUnauthenticated(t, "after the cache TTL", err)

	// Revoked through this server: refused at once.
	tok2, _ := a.CreateToken(ctx, api.RoleViewer, "dash", "test", nil)
	if _, err := a.Authenticate(ctx, tok2.Secret); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revoke(ctx, "dash"); err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(ctx, tok2.Secret)
	wantUnauthenticated(t, "revoked through this server", err)

	_, err = a.Authenticate(ctx, NewSecret(store.TokenAPI))
	wantUnauthenticated(t, "unknown secret", err)
	_, err = a.Authenticate(ctx, "")
	wantUnauthenticated(t, "empty secret", err)
}

// An expired token is refused, also when its lookup is still cached.
func TestAuthenticateExpiry(t *testing.T) {
	t.Parallel()
	a, st, c := newTestAuth(t, nil)
	ctx := t.Context()
	past := c.now().Add(-time.Minute).UTC()
	secret := NewSecret(store.TokenAPI)
	row := store.AuthToken{ID: 42, Kind: store.TokenAPI, Name: "old", Role: api.RoleAdmin, Hash: Hash(secret), CreatedAt: past.Add(-time.Hour), ExpiresAt: &past}
	if err := st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error { return tx.AuthTokenInsert(ctx, row) }); err != nil {
		t.Fatal(err)
	}
	_, err := a.Authenticate(ctx, secret)
	wantUnauthenticated(t, "expired", err)

	soon := c.now().Add(time.Minute)
	tok, err := a.CreateToken(ctx, api.RoleViewer, "short", "test", &soon)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, tok.Secret); err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Minute) // the cache entry is fresh (TTL 1h), the token is not
	_, err = a.Authenticate(ctx, tok.Secret)
	wantUnauthenticated(t, "expired while cached", err)
}

// last_used_at is written off the request path, at most once a minute.
func TestLastUsed(t *testing.T) {
	t.Parallel()
	a, st, c := newTestAuth(t, func(cfg *config.Auth) { cfg.CacheTTL = 0 })
	ctx := t.Context()
	tok, _ := a.CreateToken(ctx, api.RoleWorker, "w", "test", nil)
	if tokenRow(t, st, tok.ID).LastUsedAt != nil {
		t.Fatal("a new token has a last use")
	}
	first := c.now()
	for range 3 {
		if _, err := a.Authenticate(ctx, tok.Secret); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := tokenRow(t, st, tok.ID).LastUsedAt
	if got == nil || got.Sub(first).Abs() > time.Millisecond {
		t.Fatalf("last_used_at = %v; want %v", got, first)
	}
	c.add(30 * time.Second)
	_, _ = a.Authenticate(ctx, tok.Secret)
	if a.pendingCount() != 0 {
		t.Fatal("a second use within a minute was queued for writing")
	}
	c.add(31 * time.Second)
	_, _ = a.Authenticate(ctx, tok.Secret)
	_ = a.Flush(ctx)
	if got := tokenRow(t, st, tok.ID).LastUsedAt; got == nil || got.Sub(c.now()).Abs() > time.Millisecond {
		t.Fatalf("last_used_at = %v after a minute; want %v", got, c.now())
	}

	// Run writes them by itself.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(runCtx) }()
	defer func() { stop(); <-done }()
	c.add(2 * time.Minute)
	_, _ = a.Authenticate(ctx, tok.Secret)
	want := c.now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := tokenRow(t, st, tok.ID).LastUsedAt; got != nil && got.Sub(want).Abs() <= time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not record the use within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (a *Authenticator) pendingCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// A login with an API token opens a session of the token's role (never for
// a worker token), no longer than the token lives; logout ends it;
// revoking the token ends its sessions too.
func TestLoginWithAPIToken(t *testing.T) {
	t.Parallel()
	a, st, c := newTestAuth(t, nil)
	ctx := t.Context()
	exp := c.now().Add(2 * time.Hour)
	tok, _ := a.CreateToken(ctx, api.RoleOperator, "alice", "test", &exp)
	out, err := a.Login(ctx, api.LoginRequest{APIToken: tok.Secret})
	if err != nil {
		t.Fatal(err)
	}
	if out.Status != "authenticated" || out.User.Roles[0] != api.RoleOperator || out.User.DisplayName != "alice" ||
		!out.ExpiresAt.Equal(exp.UTC().Truncate(time.Microsecond)) {
		t.Fatalf("login = %+v; want an operator session ending with its token at %v", out, exp)
	}
	p, err := a.Authenticate(ctx, out.SessionToken)
	if err != nil || p.Kind != store.TokenSession || p.Role != api.RoleOperator {
		t.Fatalf("session = %+v, %v", p, err)
	}
	short, err := a.Login(ctx, api.LoginRequest{APIToken: tok.Secret, SessionDurationHours: 0.5})
	if err != nil || short.ExpiresAt.Sub(c.now()) > 31*time.Minute {
		t.Fatalf("a half-hour session ends at %v (now %v), %v", short.ExpiresAt, c.now(), err)
	}
	if err := a.Logout(ctx, p); err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(ctx, out.SessionToken)
	wantUnauthenticated(t, "after logout", err)

	// Logout does not end an API token.
	tp, _ := a.Authenticate(ctx, tok.Secret)
	if e, ok := apierr.As(a.Logout(ctx, tp)); !ok || e.Code != apierr.BadRequest {
		t.Fatalf("logout with an API token: %v; want bad_request", e)
	}
	// Revoking the token ends the sessions it opened.
	if _, err := a.Authenticate(ctx, short.SessionToken); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revoke(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(ctx, short.SessionToken)
	wantUnauthenticated(t, "a session of a revoked token", err)

	w, _ := a.CreateToken(ctx, api.RoleWorker, "w", "test", nil)
	if _, err := a.Login(ctx, api.LoginRequest{APIToken: w.Secret}); !isCode(err, apierr.Forbidden) {
		t.Fatalf("worker login: %v; want forbidden", err)
	}
	if _, err := a.Login(ctx, api.LoginRequest{APIToken: NewSecret(store.TokenAPI)}); !isCode(err, apierr.Unauthenticated) {
		t.Fatalf("unknown token login: %v; want unauthenticated", err)
	}
	if _, err := a.Login(ctx, api.LoginRequest{APIToken: short.SessionToken}); !isCode(err, apierr.BadRequest) {
		t.Fatalf("session as api_token: %v; want bad_request", err)
	}
	if _, err := a.Login(ctx, api.LoginRequest{}); !isCode(err, apierr.BadRequest) {
		t.Fatalf("empty login: %v; want bad_request", err)
	}
	if _, err := a.Login(ctx, api.LoginRequest{IDToken: "x.y.z"}); !isCode(err, apierr.BadRequest) {
		t.Fatalf("id_token without OIDC configured: %v; want bad_request", err)
	}
	if row := tokenRow(t, st, p.TokenID); row.RevokedAt == nil || row.Hash == out.SessionToken {
		t.Fatalf("session row after logout: %+v", row)
	}
}

func isCode(err error, code apierr.Code) bool {
	e, ok := apierr.As(err)
	return ok && e.Code == code
}

func TestNewRefusesBadSettings(t *testing.T) {
	t.Parallel()
	st := testStore(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, cfg := range map[string]config.Auth{
		"worker default role":   {OIDCDefaultRole: api.RoleWorker},
		"issuer without client": {OIDCIssuer: "https://id.example.com", OIDCDefaultRole: "viewer"},
	} {
		if _, err := New(st, ids.New(1), cfg, log); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	if _, err := New(st, ids.New(1), config.Auth{OIDCDefaultRole: "none"}, log); err != nil {
		t.Errorf("default role none: %v", err)
	}
}
