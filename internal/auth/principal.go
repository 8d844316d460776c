package auth

import (
	"context"
	"time"
)

// Principal is who made a request: the token or session it carried.
type Principal struct {
	TokenID   int64
	Kind      string // store.TokenAPI | store.TokenSession
	Role      string
	Name      string // the token's name, or the session user's display name
	Subject   string
	Email     string
	ExpiresAt *time.Time
	// Open is true when the server runs with MILLRACE_AUTH=none: the
	// request carried no identity and may do anything.
	Open bool
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the request's principal; ok is false when the
// request went through no authentication (a public route, or a test).
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// ClaimTokenID is the token id a claim made in ctx records, and the one a
// heartbeat, report or release in ctx must match: 0 when auth is off.
func ClaimTokenID(ctx context.Context) int64 {
	if p, ok := FromContext(ctx); ok && !p.Open {
		return p.TokenID
	}
	return 0
}
