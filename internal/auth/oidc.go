package auth

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/millrace/millrace/internal/apierr"
)

// oidcVerifier checks id_tokens of one issuer. The issuer is discovered on
// the first login, not at startup, so a server starts while its identity
// provider is down; a failed discovery is tried again on the next login.
type oidcVerifier struct {
	issuer, clientID, rolesClaim string
	log                          *slog.Logger
	client                       *http.Client

	mu sync.Mutex
	v  *oidc.IDTokenVerifier
}

// oidcTimeout bounds each request to the issuer (discovery, keys).
const oidcTimeout = 10 * time.Second

func newOIDCVerifier(issuer, clientID, rolesClaim string, log *slog.Logger) *oidcVerifier {
	return &oidcVerifier{issuer: issuer, clientID: clientID, rolesClaim: rolesClaim, log: log, client: &http.Client{Timeout: oidcTimeout}}
}

func (o *oidcVerifier) verifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.v != nil {
		return o.v, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, o.client), o.issuer)
	if err != nil {
		o.log.Warn("OIDC issuer discovery failed; the next login tries again", "issuer", o.issuer, "err", err)
		return nil, apierr.New(apierr.Unavailable, "the OIDC issuer %s (OIDC_ISSUER_URL) cannot be reached or answered wrongly: %v; try again shortly", o.issuer, err)
	}
	// The key set fetches (and refreshes) the issuer's JWKS with o.client.
	o.v = p.Verifier(&oidc.Config{ClientID: o.clientID})
	return o.v, nil
}

// identity is what a verified id_token says about its user.
type identity struct {
	subject, email, name string
	roles                []string
}

// verify checks raw's signature (the issuer's JWKS), issuer, audience
// (OIDC_CLIENT_ID) and expiry, and reads the user's claims.
func (o *oidcVerifier) verify(ctx context.Context, raw string) (identity, error) {
	v, err := o.verifier(ctx)
	if err != nil {
		return identity{}, err
	}
	tok, err := v.Verify(oidc.ClientContext(ctx, o.client), raw)
	if err != nil {
		o.log.Info("id_token refused", "issuer", o.issuer, "err", err)
		return identity{}, apierr.New(apierr.Unauthenticated, "id_token refused: %v (it must be signed by %s, for audience %s, and not expired)", err, o.issuer, o.clientID)
	}
	var c struct {
		Email             string `json:"email"`
		Name              string `json:"name"`
		PreferredUsername string `json:"preferred_username"`
	}
	var all map[string]json.RawMessage
	if err := tok.Claims(&c); err != nil {
		return identity{}, apierr.New(apierr.Unauthenticated, "id_token claims are not readable: %v", err)
	}
	if err := tok.Claims(&all); err != nil {
		return identity{}, apierr.New(apierr.Unauthenticated, "id_token claims are not readable: %v", err)
	}
	name := c.Name
	if name == "" {
		name = c.PreferredUsername
	}
	if name == "" {
		name = c.Email
	}
	return identity{subject: tok.Subject, email: c.Email, name: name, roles: claimStrings(all, o.rolesClaim)}, nil
}

// claimStrings reads a claim that is a string or a list of strings. A
// dotted name walks nested objects (Keycloak's realm_access.roles), unless
// a top-level claim has the dotted name itself.
func claimStrings(all map[string]json.RawMessage, name string) []string {
	raw, ok := all[name]
	if !ok {
		parts := strings.Split(name, ".")
		cur := all
		for i, p := range parts {
			r, found := cur[p]
			if !found {
				return nil
			}
			if i == len(parts)-1 {
				raw = r
				break
			}
			cur = nil
			if json.Unmarshal(r, &cur) != nil {
				return nil
			}
		}
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return strings.FieldsFunc(one, func(r rune) bool { return r == ' ' || r == ',' })
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	return nil
}
