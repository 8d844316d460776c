package server_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
)

var update = flag.Bool("update", false, "rewrite the route × role matrix of docs/security.md from the server's routes")

const (
	securityDoc = "../../docs/security.md"
	matrixBegin = "<!-- BEGIN GENERATED: route × role matrix (go test ./internal/server -run TestSecurityDocMatrix -update) -->\n"
	matrixEnd   = "<!-- END GENERATED: route × role matrix -->\n"
)

// docs/security.md shows exactly the routes the server serves and who may
// use each. With -update the test rewrites the table instead.
func TestSecurityDocMatrix(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, nil)
	want := auth.Matrix(h.Srv.Routes())
	doc, err := os.ReadFile(securityDoc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, matrixBegin), strings.Index(s, matrixEnd)
	if i < 0 || j < i {
		t.Fatalf("docs/security.md has no %q ... %q section for the matrix", strings.TrimSpace(matrixBegin), strings.TrimSpace(matrixEnd))
	}
	i += len(matrixBegin)
	if s[i:j] == want {
		return
	}
	if *update {
		if err := os.WriteFile(securityDoc, []byte(s[:i]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("docs/security.md's route × role matrix is out of date; regenerate it with `go test ./internal/server -run TestSecurityDocMatrix -update`")
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// TestRouteRoleMatrix holds every cell of the matrix: for every route the
// server serves and every role (and no token), a harmless request (unknown
// ids, an empty JSON object) is let through the guard exactly when the
// route's access allows it. Let through means any status but 401 and 403;
// stopped means 401 unauthenticated without a token, 403 forbidden with
// one, each a JSON error envelope.
func TestRouteRoleMatrix(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, servertest.WithAuth())
	tokens := map[string]string{"": ""}
	for _, role := range auth.Roles {
		tokens[role] = h.Token(t, role)
	}
	routes := h.Srv.Routes()
	if len(routes) < 40 {
		t.Fatalf("only %d routes: the server's route list is incomplete", len(routes))
	}
	for _, rt := range routes {
		t.Run(rt.Pattern, func(t *testing.T) {
			t.Parallel()
			path := pathParam.ReplaceAllString(rt.Path(), "1")
			for _, role := range append([]string{""}, auth.Roles...) {
				allowed := rt.Access.Public || (role != "" && rt.Access.Allows(role))
				code, body := probe(t, h.Srv.URL(), rt.Method(), path, tokens[role])
				who := role
				if who == "" {
					who = "no token"
				}
				switch {
				case allowed && (code == 401 || code == 403):
					t.Errorf("%s: %d %s; the route is for %s", who, code, body, rt.Access)
				case !allowed && role == "" && (code != 401 || envCode(body) != "unauthenticated"):
					t.Errorf("%s: %d %s; want 401 unauthenticated", who, code, body)
				case !allowed && role != "" && (code != 403 || envCode(body) != "forbidden"):
					t.Errorf("%s: %d %s; want 403 forbidden", who, code, body)
				}
			}
		})
	}
}

// probe sends one harmless request and returns its status, and the body
// of a refusal (a streaming reply is not read: it may never end).
func probe(t *testing.T, base, method, path, token string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return 0, nil // no answer within the time: the guard (which answers at once) let it through
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 401 && resp.StatusCode != 403 {
		return resp.StatusCode, nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b
}

// Credential data is for workers only: a viewer, an operator and even an
// admin get 403; a worker reads it. Unknown, expired and revoked tokens get
// the same 401 body, so none tells whether it exists.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	h := servertest.Start(t, servertest.WithAuth())
	admin, worker := h.Token(t, api.RoleAdmin), h.Token(t, api.RoleWorker)
	code, b, _ := authReq(t, h, admin, "POST", "/api/credentials", `{"name":"pg","kind":"postgres","data":{"password":"hunter2"}}`)
	if code != 200 {
		t.Fatalf("admin stores a credential: %d %s", code, b)
	}
	for _, role := range []string{api.RoleViewer, api.RoleOperator, api.RoleAdmin} {
		code, b, _ := authReq(t, h, h.Token(t, role), "GET", "/api/credentials/pg?include_data=true", "")
		if code != 403 || envCode(b) != "forbidden" || strings.Contains(string(b), "hunter2") {
			t.Errorf("%s reads credential data: %d %s; want 403 forbidden", role, code, b)
		}
		code, b, _ = authReq(t, h, h.Token(t, role), "GET", "/api/credentials/pg", "")
		if code != 200 || strings.Contains(string(b), "hunter2") {
			t.Errorf("%s reads the credential's name and kind: %d %s", role, code, b)
		}
	}
	code, b, _ = authReq(t, h, worker, "GET", "/api/credentials/pg?include_data=true", "")
	if code != 200 || !strings.Contains(string(b), "hunter2") {
		t.Fatalf("worker reads credential data: %d %s", code, b)
	}

	// A project's connection is never shown by the project routes.
	code, b, _ = authReq(t, h, admin, "POST", "/api/v2/projects", `{"name":"wh","warehouse":{"type":"postgres","url":"postgres://app:s3cretpw@127.0.0.1:1/db"}}`)
	if code != 200 || strings.Contains(string(b), "s3cretpw") {
		t.Fatalf("admin puts a project: %d %s", code, b)
	}
	for _, role := range []string{api.RoleViewer, api.RoleOperator, api.RoleAdmin} {
		code, b, _ := authReq(t, h, h.Token(t, role), "GET", "/api/v2/projects", "")
		if code != 200 || !strings.Contains(string(b), `"wh"`) || strings.Contains(string(b), "s3cretpw") || strings.Contains(string(b), "127.0.0.1") {
			t.Errorf("%s lists projects: %d %s; want the project without its connection", role, code, b)
		}
	}

	// Expired, revoked and unknown tokens: one 401 body.
	past := time.Now().Add(-time.Minute).UTC()
	expired := auth.NewSecret(store.TokenAPI)
	err := h.Srv.Store().Do(t.Context(), 0, func(ctx context.Context, tx store.Tx) error {
		return tx.AuthTokenInsert(ctx, store.AuthToken{ID: h.Srv.IDs().Next(), Kind: store.TokenAPI, Name: "old", Role: api.RoleAdmin,
			Hash: auth.Hash(expired), CreatedAt: past.Add(-time.Hour), ExpiresAt: &past})
	})
	if err != nil {
		t.Fatal(err)
	}
	revoked := h.Token(t, api.RoleAdmin)
	code, b, _ = authReq(t, h, revoked, "GET", "/api/auth/whoami", "")
	var who api.WhoAmI
	mustJSON(t, b, &who)
	if code != 200 {
		t.Fatalf("whoami: %d %s", code, b)
	}
	code, b, _ = authReq(t, h, admin, "DELETE", "/api/tokens/"+strconv.FormatInt(who.TokenID, 10), "")
	if code != 200 || !strings.Contains(string(b), `"revoked_at"`) {
		t.Fatalf("revoke: %d %s", code, b)
	}
	var bodies []string
	for name, tok := range map[string]string{"expired": expired, "revoked": revoked, "unknown": auth.NewSecret(store.TokenAPI), "garbage": "nope"} {
		code, b, _ := authReq(t, h, tok, "GET", "/api/executions", "")
		if code != 401 || envCode(b) != "unauthenticated" {
			t.Errorf("%s token: %d %s; want 401 unauthenticated", name, code, b)
		}
		bodies = append(bodies, string(b))
	}
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Errorf("401 bodies differ, so they tell tokens apart:\n%s\n%s", bodies[0], b)
		}
	}
	if code, b, _ := authReq(t, h, admin, "DELETE", "/api/tokens/no-such-token", ""); code != 404 || envCode(b) != "token_not_found" {
		t.Errorf("revoke an unknown token: %d %s; want 404 token_not_found", code, b)
	}
}
