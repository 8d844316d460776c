package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/config"
)

// WithAuth sets the authenticator; open (MILLRACE_AUTH=none) lets every
// request through, while token management still works (so tokens can be
// made before auth is turned on).
func WithAuth(authn *auth.Authenticator, open bool) Option {
	return func(a *API) { a.authn, a.open = authn, open }
}

func (a *API) authRoutes() {
	a.route("POST /api/auth/login", auth.Public, a.login)
	a.route("POST /api/auth/logout", auth.Anyone, a.logout)
	a.route("GET /api/auth/whoami", auth.Anyone, a.whoami)
	a.route("GET /api/auth/config", auth.Public, a.authConfig)
	a.route("POST /api/tokens", auth.Admins, a.tokenCreate)
	a.route("GET /api/tokens", auth.Admins, a.tokenList)
	a.route("DELETE /api/tokens/{id}", auth.Admins, a.tokenRevoke)
}

// authenticator returns the authenticator, or the error of an API built
// without one (tests of other routes).
func (a *API) authenticator() (*auth.Authenticator, error) {
	if a.authn == nil {
		return nil, apierr.New(apierr.Unavailable, "this server has no authenticator configured")
	}
	return a.authn, nil
}

func principal(r *http.Request) auth.Principal {
	p, _ := auth.FromContext(r.Context())
	return p
}

func (a *API) login(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.LoginRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	authn, err := a.authenticator()
	if err != nil {
		return nil, err
	}
	out, err := authn.Login(r.Context(), body)
	if err != nil {
		return nil, err
	}
	// The browser's copy: HttpOnly keeps it from scripts, SameSite=Strict
	// from other sites' forms.
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: out.SessionToken, Path: "/", Expires: out.ExpiresAt,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
	return out, nil
}

// overTLS reports whether the browser reached us over HTTPS, directly or
// through a proxy that terminates TLS: then the cookie is Secure.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) (any, error) {
	p := principal(r)
	if p.Open {
		return nil, apierr.New(apierr.BadRequest, "authentication is off (MILLRACE_AUTH=none): there is no session to end")
	}
	authn, err := a.authenticator()
	if err != nil {
		return nil, err
	}
	if err := authn.Logout(r.Context(), p); err != nil {
		return nil, err
	}
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
	return map[string]string{"status": "logged_out"}, nil
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) (any, error) {
	return auth.WhoAmI(principal(r)), nil
}

func (a *API) authConfig(w http.ResponseWriter, r *http.Request) (any, error) {
	out := api.AuthConfig{Auth: config.AuthTokens}
	if a.open || a.authn == nil {
		out.Auth = config.AuthNone
	}
	if a.authn != nil {
		if iss, cid, ok := a.authn.OIDC(); ok {
			out.OIDC = &api.OIDCConfig{Issuer: iss, ClientID: cid}
		}
	}
	return out, nil
}

// createdBy names who made a token, for the token list.
func createdBy(p auth.Principal) string {
	switch {
	case p.Open:
		return "api (auth off)"
	case p.Subject != "" && p.Name != "":
		return p.Name + " (" + p.Subject + ")"
	case p.Subject != "":
		return p.Subject
	case p.Name != "":
		return p.Name + " (token:" + strconv.FormatInt(p.TokenID, 10) + ")"
	default:
		return "token:" + strconv.FormatInt(p.TokenID, 10)
	}
}

func (a *API) tokenCreate(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.TokenCreate
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	authn, err := a.authenticator()
	if err != nil {
		return nil, err
	}
	if !auth.ValidRole(body.Role) {
		return nil, apierr.New(apierr.BadRequest, "role %q: want admin, operator, viewer or worker", body.Role)
	}
	if body.ExpiresAt != nil && !body.ExpiresAt.After(time.Now()) {
		return nil, apierr.New(apierr.BadRequest, "expires_at %s is in the past", body.ExpiresAt.Format(time.RFC3339))
	}
	if len(body.Name) > 128 {
		return nil, apierr.New(apierr.BadRequest, "name is longer than 128 characters")
	}
	out, err := authn.CreateToken(r.Context(), body.Role, body.Name, createdBy(principal(r)), body.ExpiresAt)
	if err != nil {
		return nil, err
	}
	w.Header().Set("Cache-Control", "no-store")
	return reply{http.StatusCreated, out}, nil
}

func (a *API) tokenList(w http.ResponseWriter, r *http.Request) (any, error) {
	list, err := auth.ListTokens(r.Context(), a.st)
	if err != nil {
		return nil, err
	}
	return api.TokenList{Tokens: list}, nil
}

func (a *API) tokenRevoke(w http.ResponseWriter, r *http.Request) (any, error) {
	authn, err := a.authenticator()
	if err != nil {
		return nil, err
	}
	t, err := authn.Revoke(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, auth.ErrTokenNotFound):
		return nil, apierr.New(apierr.TokenNotFound, "%v", err)
	case errors.Is(err, auth.ErrTokenAmbiguous):
		return nil, apierr.New(apierr.BadRequest, "%v", err)
	}
	return t, err
}
