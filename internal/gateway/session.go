package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
)

// SessionCookie is the cookie a browser login sets (the server's name too).
const SessionCookie = "millrace_session"

// unauthenticated is the one 401 message: it never says whether a token
// exists, has expired or was revoked.
const unauthenticated = "no valid token or session: log in (POST /api/auth/login) or send Authorization: Bearer <token> (see docs/gateway.md)"

var errDenied = errors.New("denied")

// tokenFrom returns the secret a request carries: Authorization: Bearer,
// else X-Session-Token, else the session cookie; "" when none.
func tokenFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	if t := r.Header.Get("X-Session-Token"); t != "" {
		return strings.TrimSpace(t)
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		return c.Value
	}
	return ""
}

// caller is who a request speaks for, as authed put it in the context.
type caller struct {
	secret string // forwarded to the server as Bearer; "" when its auth is off
	who    api.WhoAmI
	p      auth.Principal
}

type callerKey struct{}

// callerFrom returns the secret and principal authed attached to ctx.
func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

func principalOf(w api.WhoAmI) auth.Principal {
	if w.AuthDisabled {
		return auth.Principal{Open: true}
	}
	name := w.User.DisplayName
	if name == "" {
		name = w.User.UserID
	}
	return auth.Principal{TokenID: w.TokenID, Kind: w.Kind, Role: w.Role, Name: name,
		Subject: w.User.UserID, Email: w.User.Email, ExpiresAt: w.ExpiresAt}
}

// identify returns who secret is: from the sessions bucket, else from the
// server's whoami (then cached under auth.Hash(secret), never the secret
// itself). errDenied means 401; other errors mean the server or NATS failed.
func (g *Gateway) identify(ctx context.Context, secret string) (api.WhoAmI, error) {
	if !strings.HasPrefix(secret, auth.APIPrefix) && !strings.HasPrefix(secret, auth.SessionPrefix) {
		// Not a Millrace token: the server would refuse it, so do not
		// ask it (junk must not cost a lookup each), unless its auth is off.
		return g.anonymous(ctx)
	}
	key := auth.Hash(secret)
	if who, ok := g.cached(ctx, key); ok {
		g.metrics.sessions.WithLabelValues("hit").Inc()
		return who, nil
	}
	who, raw, err := g.whoami(ctx, secret)
	if err != nil {
		if errors.Is(err, errDenied) {
			g.metrics.sessions.WithLabelValues("denied").Inc()
		} else {
			g.metrics.sessions.WithLabelValues("error").Inc()
		}
		return api.WhoAmI{}, err
	}
	g.metrics.sessions.WithLabelValues("miss").Inc()
	if _, err := g.sessions.Put(ctx, key, raw); err != nil {
		// Still served: the next request asks the server again.
		g.log.Warn("cache a session in the sessions bucket", "bucket", g.cfg.SessionBucket, "error", err)
	}
	return who, nil
}

// cached reads the sessions bucket. An entry older than the cache TTL is a
// miss even if JetStream has not removed it yet, and so is a session past
// its own expiry.
func (g *Gateway) cached(ctx context.Context, key string) (api.WhoAmI, bool) {
	e, err := g.sessions.Get(ctx, key)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			g.log.Warn("read the sessions bucket; asking the server instead", "bucket", g.cfg.SessionBucket, "error", err)
		}
		return api.WhoAmI{}, false
	}
	now := time.Now()
	if now.Sub(e.Created()) >= g.cfg.SessionCacheTTL {
		return api.WhoAmI{}, false
	}
	var who api.WhoAmI
	if err := json.Unmarshal(e.Value(), &who); err != nil {
		return api.WhoAmI{}, false
	}
	if who.ExpiresAt != nil && !now.Before(*who.ExpiresAt) {
		return api.WhoAmI{}, false
	}
	return who, true
}

// whoami asks the server who secret is ("" asks without a token).
func (g *Gateway) whoami(ctx context.Context, secret string) (api.WhoAmI, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.apiURL("/api/auth/whoami"), nil)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := g.upstream.Do(req)
	if err != nil {
		return api.WhoAmI{}, nil, fmt.Errorf("ask the server who the caller is: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return api.WhoAmI{}, nil, fmt.Errorf("read the server's whoami reply: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return api.WhoAmI{}, nil, errDenied
	default:
		return api.WhoAmI{}, nil, fmt.Errorf("the server's GET /api/auth/whoami answered %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	var who api.WhoAmI
	if err := json.Unmarshal(raw, &who); err != nil {
		return api.WhoAmI{}, nil, fmt.Errorf("the server's whoami reply is not JSON: %w", err)
	}
	return who, raw, nil
}

// anonAnswer is the server's answer to a request without a token.
type anonAnswer struct {
	who api.WhoAmI
	err error
	at  time.Time
}

// anonymous answers a request without a token: allowed only when the
// server runs with MILLRACE_AUTH=none, which is asked once per cache TTL
// (at most every 30 s).
func (g *Gateway) anonymous(ctx context.Context) (api.WhoAmI, error) {
	ttl := min(g.cfg.SessionCacheTTL, 30*time.Second)
	g.anonMu.Lock()
	a := g.anon
	g.anonMu.Unlock()
	if !a.at.IsZero() && time.Since(a.at) < ttl {
		return a.who, a.err
	}
	who, _, err := g.whoami(ctx, "")
	if err != nil && !errors.Is(err, errDenied) {
		return api.WhoAmI{}, err // not remembered: the server may be back soon
	}
	if err == nil && !who.AuthDisabled {
		err = errDenied // a server that answers whoami without a token must have auth off
	}
	g.anonMu.Lock()
	g.anon = anonAnswer{who: who, err: err, at: time.Now()}
	g.anonMu.Unlock()
	return who, err
}

// authed wraps h so it runs only for a caller whose session or token the
// access admits; the principal is in the request's context
// (auth.FromContext), the secret in callerFrom's. A public route runs for
// anyone, with the principal attached when a valid token came along.
func (g *Gateway) authed(access auth.Access, h http.HandlerFunc) http.HandlerFunc {
	return g.authedFrom(access, tokenFrom, h)
}

// authedSSE is authed that also takes the token from ?session_token=, for
// EventSource clients that cannot set headers (NoETL's GET /events).
func (g *Gateway) authedSSE(access auth.Access, h http.HandlerFunc) http.HandlerFunc {
	return g.authedFrom(access, func(r *http.Request) string {
		if t := tokenFrom(r); t != "" {
			return t
		}
		return r.URL.Query().Get("session_token")
	}, h)
}

func (g *Gateway) authedFrom(access auth.Access, from func(*http.Request) string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secret := from(r)
		who, err := g.identify(r.Context(), secret)
		if err != nil {
			if access.Public {
				h(w, r)
				return
			}
			if errors.Is(err, errDenied) {
				writeErr(w, apierr.New(apierr.Unauthenticated, unauthenticated))
				return
			}
			g.log.Warn("identify a caller", "method", r.Method, "path", r.URL.Path, "error", err)
			writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the gateway could not check the token with the server at %s: %v; retry shortly", g.server, err))
			return
		}
		p := principalOf(who)
		if !p.Open && !access.Allows(p.Role) {
			writeErr(w, apierr.New(apierr.Forbidden, "role %s may not %s %s; roles that may: %s", p.Role, r.Method, r.URL.Path, access))
			return
		}
		if p.Open {
			secret = ""
		}
		ctx := auth.WithPrincipal(r.Context(), p)
		ctx = context.WithValue(ctx, callerKey{}, caller{secret: secret, who: who, p: p})
		h(w, r.WithContext(ctx))
	}
}

// sessionRoutes are the gateway's own login, logout and whoami.
func (g *Gateway) sessionRoutes() {
	g.handle("POST /api/auth/login", g.login)
	g.handle("POST /api/auth/logout", g.authed(auth.Anyone, g.logout))
	g.handle("GET /api/auth/whoami", g.authed(auth.Anyone, g.whoamiGet))
	g.handle("GET /api/auth/config", g.authConfig)
	// The same through the proxy's prefix (the UI logs in at {api}/auth/login):
	// a login must be cached and a logout must drop the cached copy.
	g.handle("POST "+ProxyPrefix+"auth/login", g.login)
	g.handle("POST "+ProxyPrefix+"auth/logout", g.authed(auth.Anyone, g.logout))
}

// login forwards POST /api/auth/login to the server; on success it caches
// the session in the sessions bucket and sets the session cookie.
func (g *Gateway) login(w http.ResponseWriter, r *http.Request) {
	body, ok := g.readBody(w, r, int64(g.cfg.MaxBodyBytes))
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.apiURL("/api/auth/login"), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.upstream.Do(req)
	if err != nil {
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the gateway could not reach the server at %s to log in: %v; retry shortly", g.server, err))
		return
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "read the server's login reply: %v; retry", err))
		return
	}
	if resp.StatusCode != http.StatusOK {
		relay(w, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
		return
	}
	var reply api.LoginReply
	if err := json.Unmarshal(raw, &reply); err != nil || reply.SessionToken == "" {
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the server's login reply has no session_token; is SERVER_API_URL a Millrace server?"))
		return
	}
	// Cache now so the first request does not ask the server; a failure
	// here only costs that request a lookup.
	if _, err := g.identify(r.Context(), reply.SessionToken); err != nil {
		g.log.Warn("cache a new session", "error", err)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: reply.SessionToken, Path: "/", Expires: reply.ExpiresAt,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: g.secure(r)})
	relay(w, http.StatusOK, "application/json", raw)
}

// logout forwards POST /api/auth/logout; when the server revoked the
// session, the cached entry is deleted too, which every replica sees at
// once (they share the bucket and keep no cache of their own).
func (g *Gateway) logout(w http.ResponseWriter, r *http.Request) {
	c, _ := callerFrom(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.apiURL("/api/auth/logout"), nil)
	if c.secret != "" {
		req.Header.Set("Authorization", "Bearer "+c.secret)
	}
	resp, err := g.upstream.Do(req)
	if err != nil {
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the gateway could not reach the server at %s to log out: %v; retry", g.server, err))
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 == 2 && c.secret != "" {
		if err := g.sessions.Purge(r.Context(), auth.Hash(c.secret)); err != nil {
			// The server revoked it; the entry would live until its TTL.
			g.log.Error("drop a logged-out session from the sessions bucket; it stays usable here until NATS_SESSION_CACHE_TTL_SECS passes", "error", err)
			writeErr(w, apierr.New(apierr.Unavailable, "the session was revoked but the gateway could not drop its cached copy: %v; retry the logout", err))
			return
		}
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: g.secure(r)})
	}
	relay(w, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
}

// authConfig passes on the server's GET /api/auth/config (public: what a
// login page needs, the OIDC issuer and client id).
func (g *Gateway) authConfig(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.apiURL("/api/auth/config"), nil)
	resp, err := g.upstream.Do(req)
	if err != nil {
		writeErr(w, apierr.New(apierr.UpstreamUnavailable, "the gateway could not reach the server at %s: %v; retry shortly", g.server, err))
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	relay(w, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
}

// whoamiGet answers from the cache: who the caller is, as the gateway sees it.
func (g *Gateway) whoamiGet(w http.ResponseWriter, r *http.Request) {
	c, _ := callerFrom(r.Context())
	writeJSON(w, http.StatusOK, c.who)
}

// secure reports whether cookies must be Secure: the client came over TLS.
func (g *Gateway) secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") ||
		strings.HasPrefix(g.cfg.PublicURL, "https://")
}

// readBody reads a request body of at most limit bytes; a larger one gets
// 413 and ok false.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	if r.ContentLength > limit {
		writeErr(w, tooLarge(limit))
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tb *http.MaxBytesError
		if errors.As(err, &tb) {
			writeErr(w, tooLarge(limit))
		} else {
			writeErr(w, apierr.New(apierr.BadRequest, "read the request body: %v", err))
		}
		return nil, false
	}
	return b, true
}

func tooLarge(limit int64) *apierr.Error {
	return apierr.New(apierr.TooLarge, "request body exceeds %d bytes (MILLRACE_MAX_BODY_BYTES)", limit)
}

// relay writes a reply the server made.
func relay(w http.ResponseWriter, code int, contentType string, body []byte) {
	if contentType != "" {
		w.Header().Set("Content-Type", contentType)
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
