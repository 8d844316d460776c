package client_test

import (
	"net/http"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/server/servertest"
)

// The client's token and login calls against a real server with auth on:
// make, list and revoke a token, log in with it, who am I for the token and
// the session, log out, and the public auth config.
func TestAuthCallsAgainstServer(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, servertest.WithAuth())
	ctx := t.Context()
	admin := client.New(h.Srv.URL()).WithToken(h.Token(t, api.RoleAdmin))

	cfg, err := client.New(h.Srv.URL()).AuthConfig(ctx)
	if err != nil || cfg.Auth != "tokens" || cfg.OIDC != nil {
		t.Fatalf("auth config: %+v, %v", cfg, err)
	}
	made, err := admin.TokenCreate(ctx, api.TokenCreate{Role: api.RoleOperator, Name: "client-test"})
	if err != nil || made.Secret == "" || made.Role != api.RoleOperator {
		t.Fatalf("create: %+v, %v", made, err)
	}
	list, err := admin.TokenList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tk := range list {
		found = found || tk.ID == made.ID
	}
	if !found {
		t.Fatalf("list %+v lacks token %d", list, made.ID)
	}

	op := client.New(h.Srv.URL()).WithToken(made.Secret)
	who, err := op.WhoAmI(ctx)
	if err != nil || who.Role != api.RoleOperator || who.TokenID != made.ID {
		t.Fatalf("whoami: %+v, %v", who, err)
	}
	if _, err := op.TokenList(ctx); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("operator token list: %v, want 403", err)
	}

	login, err := client.New(h.Srv.URL()).Login(ctx, api.LoginRequest{APIToken: made.Secret})
	if err != nil || login.SessionToken == "" {
		t.Fatalf("login: %+v, %v", login, err)
	}
	sess := client.New(h.Srv.URL()).WithToken(login.SessionToken)
	if who, err := sess.WhoAmI(ctx); err != nil || who.Role != api.RoleOperator || who.Kind != "session" {
		t.Fatalf("whoami with the session: %+v, %v", who, err)
	}
	if err := sess.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.WhoAmI(ctx); client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("session after logout: %v, want 401", err)
	}

	if rev, err := admin.TokenRevoke(ctx, "client-test"); err != nil || rev.ID != made.ID || rev.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", rev, err)
	}
	if _, err := op.WhoAmI(ctx); client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("revoked token: %v, want 401", err)
	}
	if _, err := admin.TokenRevoke(ctx, "no-such-token"); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("revoke unknown: %v, want 404", err)
	}
}
