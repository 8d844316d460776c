package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// ErrUnauthenticated is every failed lookup: no such secret, expired or
// revoked. One error and one message for all, so a reply never tells
// whether a token exists.
var ErrUnauthenticated = apierr.New(apierr.Unauthenticated,
	"missing, unknown, expired or revoked token; send Authorization: Bearer <token> (make one with: millrace token create --role ROLE)")

// SessionCookie is the cookie a browser login sets.
const SessionCookie = "millrace_session"

// touchEvery is how often a token's last_used_at is written at most: a
// busy worker token must not cost a write per request.
const touchEvery = time.Minute

// maxCached bounds the lookup cache; beyond it expired entries are swept,
// and if none are, the cache starts over.
const maxCached = 10000

// Authenticator looks up the secrets requests carry, opens sessions
// (logins) and ends them. One per server process.
type Authenticator struct {
	st   *store.Store
	gen  *ids.Generator
	cfg  config.Auth
	log  *slog.Logger
	oidc *oidcVerifier // nil when OIDC_ISSUER_URL is empty
	now  func() time.Time

	mu      sync.Mutex
	cache   map[string]cached // by Hash(secret)
	touched map[int64]time.Time
	pending map[int64]time.Time // uses not written yet
	wake    chan struct{}
}

type cached struct {
	p     Principal
	until time.Time
}

// New returns an Authenticator for cfg (MILLRACE_AUTH=tokens). It checks
// the OIDC settings; the issuer itself is contacted on the first login.
func New(st *store.Store, gen *ids.Generator, cfg config.Auth, log *slog.Logger) (*Authenticator, error) {
	if cfg.CacheTTL < 0 {
		return nil, fmt.Errorf("MILLRACE_AUTH_CACHE_SECONDS must not be negative")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = config.DefaultSessionTTL
	}
	if cfg.OIDCRolesClaim == "" {
		cfg.OIDCRolesClaim = config.DefaultOIDCRoleClaim
	}
	switch cfg.OIDCDefaultRole {
	case api.RoleAdmin, api.RoleOperator, api.RoleViewer, "none":
	case "":
		cfg.OIDCDefaultRole = "none"
	default:
		return nil, fmt.Errorf("OIDC_DEFAULT_ROLE=%q: want viewer, operator, admin or none (a login never gets role worker)", cfg.OIDCDefaultRole)
	}
	a := &Authenticator{st: st, gen: gen, cfg: cfg, log: log, now: time.Now,
		cache: map[string]cached{}, touched: map[int64]time.Time{}, pending: map[int64]time.Time{}, wake: make(chan struct{}, 1)}
	if cfg.OIDCIssuer != "" {
		if cfg.OIDCClientID == "" {
			return nil, fmt.Errorf("OIDC_ISSUER_URL is set but OIDC_CLIENT_ID is not: set it to the client id registered with %s (id_tokens must carry it as their audience)", cfg.OIDCIssuer)
		}
		a.oidc = newOIDCVerifier(cfg.OIDCIssuer, cfg.OIDCClientID, cfg.OIDCRolesClaim, log)
	}
	return a, nil
}

// SecretFrom returns the secret a request carries: Authorization: Bearer,
// else X-Session-Token, else the session cookie; "" if none.
func SecretFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	if t := strings.TrimSpace(r.Header.Get("X-Session-Token")); t != "" {
		return t
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		return c.Value
	}
	return ""
}

// Authenticate returns the principal of a token or session secret, or
// ErrUnauthenticated. Another error means the store could not be read.
func (a *Authenticator) Authenticate(ctx context.Context, secret string) (Principal, error) {
	if secret == "" || len(secret) > 256 {
		return Principal{}, ErrUnauthenticated
	}
	h := Hash(secret)
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[h]
	a.mu.Unlock()
	if ok && now.Before(c.until) {
		if c.p.ExpiresAt != nil && !now.Before(*c.p.ExpiresAt) {
			a.forgetHash(h)
			return Principal{}, ErrUnauthenticated
		}
		a.used(c.p.TokenID, now)
		return c.p, nil
	}
	t, err := store.ReadValue(ctx, a.st, func(q store.Querier) (store.AuthToken, error) {
		return q.AuthTokenByHash(ctx, h)
	})
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, err
	}
	if t.RevokedAt != nil || (t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)) {
		return Principal{}, ErrUnauthenticated
	}
	p := principalOf(t)
	if a.cfg.CacheTTL > 0 {
		a.mu.Lock()
		if len(a.cache) >= maxCached {
			a.sweepLocked(now)
		}
		a.cache[h] = cached{p: p, until: now.Add(a.cfg.CacheTTL)}
		a.mu.Unlock()
	}
	a.used(p.TokenID, now)
	return p, nil
}

func principalOf(t store.AuthToken) Principal {
	return Principal{TokenID: t.ID, Kind: t.Kind, Role: t.Role, Name: t.Name, Subject: t.Subject, Email: t.Email, ExpiresAt: t.ExpiresAt}
}

func (a *Authenticator) sweepLocked(now time.Time) {
	for h, c := range a.cache {
		if !now.Before(c.until) {
			delete(a.cache, h)
		}
	}
	if len(a.cache) >= maxCached {
		a.cache = map[string]cached{}
	}
}

// Forget drops a token from this server's cache, so that its revocation
// takes effect here at once (other servers see it within the cache TTL).
func (a *Authenticator) Forget(tokenID int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for h, c := range a.cache {
		if c.p.TokenID == tokenID {
			delete(a.cache, h)
		}
	}
}

func (a *Authenticator) forgetHash(h string) {
	a.mu.Lock()
	delete(a.cache, h)
	a.mu.Unlock()
}

// used notes a use of a token; Run writes it, at most once a minute per
// token, off the request's path.
func (a *Authenticator) used(id int64, now time.Time) {
	a.mu.Lock()
	if last, ok := a.touched[id]; ok && now.Sub(last) < touchEvery {
		a.mu.Unlock()
		return
	}
	if len(a.touched) >= maxCached {
		for k, t := range a.touched {
			if now.Sub(t) >= touchEvery {
				delete(a.touched, k)
			}
		}
	}
	a.touched[id] = now
	a.pending[id] = now
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run writes last-used times until ctx ends (the server runs it, and
// closes the store only after it returned), then writes what is left.
func (a *Authenticator) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = a.Flush(fctx)
			cancel()
			return
		case <-a.wake:
		}
		if err := a.Flush(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("could not record when tokens were last used; will retry on their next use", "err", err)
		}
	}
}

// Flush writes the pending last-used times now.
func (a *Authenticator) Flush(ctx context.Context) error {
	a.mu.Lock()
	pending := a.pending
	a.pending = map[int64]time.Time{}
	a.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	err := a.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		for id, at := range pending {
			if err := tx.AuthTokenTouch(ctx, id, at.UTC().Truncate(time.Microsecond)); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Let the next use try again.
		a.mu.Lock()
		for id := range pending {
			delete(a.touched, id)
		}
		a.mu.Unlock()
	}
	return err
}

// Login opens a session for an API token or an OIDC id_token.
func (a *Authenticator) Login(ctx context.Context, req api.LoginRequest) (api.LoginReply, error) {
	now := a.now().UTC().Truncate(time.Microsecond)
	ttl := a.cfg.SessionTTL
	if req.SessionDurationHours < 0 {
		return api.LoginReply{}, apierr.New(apierr.BadRequest, "session_duration_hours must be positive, or omitted for the server's MILLRACE_SESSION_TTL_SECONDS")
	}
	if d := time.Duration(req.SessionDurationHours * float64(time.Hour)); d > 0 && d < ttl {
		ttl = d
	}
	expires := now.Add(ttl)
	var row store.AuthToken
	switch {
	case req.APIToken != "" && req.IDToken != "":
		return api.LoginReply{}, apierr.New(apierr.BadRequest, "send either api_token or id_token, not both")
	case req.APIToken != "":
		if !strings.HasPrefix(req.APIToken, APIPrefix) {
			return api.LoginReply{}, apierr.New(apierr.BadRequest, "api_token must be an API token (%s…); a session cannot open another session", APIPrefix)
		}
		p, err := a.Authenticate(ctx, req.APIToken)
		if err != nil {
			return api.LoginReply{}, err
		}
		if p.Role == api.RoleWorker {
			return api.LoginReply{}, apierr.New(apierr.Forbidden, "a worker token cannot open a session: workers send their token on every request; log in with an admin, operator or viewer token")
		}
		if p.ExpiresAt != nil && p.ExpiresAt.Before(expires) {
			expires = *p.ExpiresAt // a session never outlives its token
		}
		ref := "token:" + strconv.FormatInt(p.TokenID, 10)
		row = store.AuthToken{Role: p.Role, Name: p.Name, Subject: ref, CreatedBy: "login:" + ref}
	case req.IDToken != "":
		if a.oidc == nil {
			return api.LoginReply{}, apierr.New(apierr.BadRequest, "this server does not accept OIDC logins (OIDC_ISSUER_URL is not set); log in with an API token")
		}
		id, err := a.oidc.verify(ctx, req.IDToken)
		if err != nil {
			return api.LoginReply{}, err
		}
		role := pickRole(id.roles)
		if role == "" {
			role = a.cfg.OIDCDefaultRole
		}
		if role == "none" {
			return api.LoginReply{}, apierr.New(apierr.Forbidden, "the id_token's %q claim names no Millrace role (admin, operator or viewer), and OIDC_DEFAULT_ROLE is none", a.cfg.OIDCRolesClaim)
		}
		row = store.AuthToken{Role: role, Name: id.name, Subject: id.subject, Email: id.email, CreatedBy: "oidc:" + a.cfg.OIDCIssuer}
	default:
		return api.LoginReply{}, apierr.New(apierr.BadRequest, "send api_token (an API token) or id_token (an OIDC id_token)")
	}
	secret := NewSecret(store.TokenSession)
	row.ID, row.Kind, row.Hash, row.CreatedAt, row.ExpiresAt = a.gen.Next(), store.TokenSession, Hash(secret), now, &expires
	if err := a.st.Do(ctx, row.ID, func(ctx context.Context, tx store.Tx) error { return tx.AuthTokenInsert(ctx, row) }); err != nil {
		return api.LoginReply{}, err
	}
	a.log.Info("session opened", "session_id", row.ID, "subject", row.Subject, "role", row.Role, "expires_at", expires)
	return api.LoginReply{Status: "authenticated", SessionToken: secret, User: UserOf(principalOf(row)), ExpiresAt: expires}, nil
}

// pickRole is the highest Millrace role among a login's claimed roles;
// worker is never granted to a login.
func pickRole(roles []string) string {
	for _, r := range []string{api.RoleAdmin, api.RoleOperator, api.RoleViewer} {
		for _, c := range roles {
			if strings.EqualFold(strings.TrimSpace(c), r) {
				return r
			}
		}
	}
	return ""
}

// Logout ends the session p; an API token is not ended by logout.
func (a *Authenticator) Logout(ctx context.Context, p Principal) error {
	if p.Kind != store.TokenSession {
		return apierr.New(apierr.BadRequest, "logout ends sessions; this is an API token: revoke it with `millrace token revoke %d`", p.TokenID)
	}
	a.Forget(p.TokenID)
	err := a.st.Do(ctx, p.TokenID, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.AuthTokenRevoke(ctx, p.TokenID, a.now().UTC().Truncate(time.Microsecond))
		return err
	})
	a.Forget(p.TokenID) // a request that raced the revocation may have cached it again
	if err == nil {
		a.log.Info("session ended", "session_id", p.TokenID, "subject", p.Subject)
	}
	return err
}

// OIDC returns the issuer and client id logins may use, or false.
func (a *Authenticator) OIDC() (issuer, clientID string, ok bool) {
	if a.oidc == nil {
		return "", "", false
	}
	return a.cfg.OIDCIssuer, a.cfg.OIDCClientID, true
}

// UserOf is who p speaks for, as the API shows it.
func UserOf(p Principal) api.User {
	id := p.Subject
	if id == "" {
		id = "token:" + strconv.FormatInt(p.TokenID, 10)
	}
	return api.User{UserID: id, Email: p.Email, DisplayName: p.Name, Roles: []string{p.Role}}
}

// WhoAmI is p as GET /api/auth/whoami shows it.
func WhoAmI(p Principal) api.WhoAmI {
	if p.Open {
		return api.WhoAmI{Kind: "none", Role: api.RoleAdmin, AuthDisabled: true,
			User: api.User{UserID: "anonymous", DisplayName: "authentication is off", Roles: append([]string(nil), Roles...)}}
	}
	return api.WhoAmI{TokenID: p.TokenID, Kind: p.Kind, Role: p.Role, User: UserOf(p), ExpiresAt: p.ExpiresAt}
}

// Revoke revokes an API token (by id or name) and the sessions opened with
// it, and drops them from this server's cache at once.
func (a *Authenticator) Revoke(ctx context.Context, idOrName string) (api.Token, error) {
	t, ended, err := revokeToken(ctx, a.st, idOrName)
	if err != nil {
		return t, err
	}
	for _, id := range append([]int64{t.ID}, ended...) {
		a.Forget(id)
	}
	a.log.Info("token revoked", "token_id", t.ID, "name", t.Name, "sessions_ended", len(ended))
	return t, nil
}

// CreateToken makes an API token (see the package function CreateToken).
func (a *Authenticator) CreateToken(ctx context.Context, role, name, createdBy string, expires *time.Time) (api.TokenCreated, error) {
	t, err := CreateToken(ctx, a.st, a.gen, role, name, createdBy, expires)
	if err == nil {
		a.log.Info("token created", "token_id", t.ID, "name", t.Name, "role", t.Role, "created_by", createdBy)
	}
	return t, err
}
