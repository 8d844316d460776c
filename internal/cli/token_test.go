package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/store"
)

// Client commands send --token, else MILLRACE_TOKEN, else the admin token
// of the dev instance they talk to (never to another server); a 401 says
// what to do.
func TestClientTokenSources(t *testing.T) {
	var mu sync.Mutex
	var got []string
	handler := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, r.Header.Get("Authorization"))
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			if status == http.StatusUnauthorized {
				_, _ = w.Write([]byte(`{"error":{"code":"unauthenticated","message":"a valid token is needed"}}`))
				return
			}
			_, _ = w.Write([]byte(`{"executions":[],"page":1,"total":0}`))
		}
	}
	devAPI := httptest.NewServer(handler(http.StatusOK))
	t.Cleanup(devAPI.Close)
	other := httptest.NewServer(handler(http.StatusUnauthorized))
	t.Cleanup(other.Close)
	dir := t.TempDir()
	t.Setenv("MILLRACE_DATA_DIR", dir)
	t.Setenv("SERVER_API_URL", "")
	t.Setenv(tokenEnv, "")
	tokFile := filepath.Join(dir, devAdminFileName)
	if err := writeSecretFile(tokFile, "mrt_dev"); err != nil {
		t.Fatal(err)
	}
	remove := announceDev(newTestLogger(t), dir, devAPI.URL, "nats://127.0.0.1:1", tokFile)
	t.Cleanup(remove)

	last := func(args ...string) (string, string) {
		t.Helper()
		code, _, stderr := runCLI(t, args...)
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			t.Fatalf("%v: no request (exit %d) %s", args, code, stderr)
		}
		return got[len(got)-1], stderr
	}
	if h, _ := last("executions", "list"); h != "Bearer mrt_dev" {
		t.Errorf("found dev: Authorization %q, want dev's admin token", h)
	}
	if h, _ := last("executions", "list", "--server", devAPI.URL); h != "Bearer mrt_dev" {
		t.Errorf("--server naming dev: Authorization %q, want dev's admin token", h)
	}
	if h, _ := last("executions", "list", "--token", "mrt_flag"); h != "Bearer mrt_flag" {
		t.Errorf("--token: Authorization %q", h)
	}
	t.Setenv(tokenEnv, "mrt_env")
	if h, _ := last("executions", "list"); h != "Bearer mrt_env" {
		t.Errorf("MILLRACE_TOKEN: Authorization %q", h)
	}
	if _, help, _ := runCLI(t, "executions", "list", "--help"); strings.Contains(help, "mrt_env") {
		t.Errorf("--help shows the token from MILLRACE_TOKEN:\n%s", help)
	}
	t.Setenv(tokenEnv, "")
	h, stderr := last("executions", "list", "--server", other.URL)
	if h != "" {
		t.Errorf("another server got dev's token: Authorization %q", h)
	}
	if !strings.Contains(stderr, "unauthenticated") || !strings.Contains(stderr, "MILLRACE_TOKEN") || !strings.Contains(stderr, "millrace token create") {
		t.Errorf("401: stderr %q does not say what to do", stderr)
	}
}

func TestParseExpiry(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"720h":                 now.Add(720 * time.Hour),
		"30d":                  now.AddDate(0, 0, 30),
		"2027-01-31":           time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC),
		"2027-01-31T12:00:00Z": time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC),
	} {
		got, err := parseExpiry(in, now)
		if err != nil || got == nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if got, err := parseExpiry("", now); got != nil || err != nil {
		t.Errorf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"soon", "-1h", "2020-01-01", "0d"} {
		if _, err := parseExpiry(bad, now); err == nil {
			t.Errorf("parseExpiry(%q) accepted", bad)
		}
	}
}

// With DATABASE_URL the token commands work on the store itself: create
// prints only the secret on stdout, list shows it, revoke by name works,
// and the secret is stored only hashed.
func TestTokenCommandsOnStore(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "m.db")
	t.Setenv("DATABASE_URL", db)
	code, stdout, stderr := runCLI(t, "token", "create", "--role", "admin", "--name", "boot", "--expires", "30d")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, stderr)
	}
	secret := strings.TrimSpace(stdout)
	if !strings.HasPrefix(secret, auth.APIPrefix) || strings.ContainsAny(secret, " \n") {
		t.Fatalf("create: stdout %q, want the secret alone", stdout)
	}
	if !strings.Contains(stderr, `"boot"`) || !strings.Contains(stderr, "role admin") || !strings.Contains(stderr, "expires") {
		t.Errorf("create: stderr %q", stderr)
	}
	if code, _, stderr := runCLI(t, "token", "create", "--role", "root"); code == 0 || !strings.Contains(stderr, "admin, operator, viewer, worker") {
		t.Errorf("bad role: exit %d, %q", code, stderr)
	}
	if code, _, _ := runCLI(t, "token", "create", "--role", "worker", "--name", "w1"); code != 0 {
		t.Fatal("create worker failed")
	}
	code, stdout, stderr = runCLI(t, "token", "list")
	if code != 0 || !strings.Contains(stdout, "boot") || !strings.Contains(stdout, "w1") || strings.Contains(stdout, secret) {
		t.Fatalf("list: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runCLI(t, "token", "revoke", "boot"); code != 0 || !strings.Contains(stdout, "revoked token") {
		t.Fatalf("revoke: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "token", "revoke", "nobody"); code == 0 || !strings.Contains(stderr, "no such token") {
		t.Errorf("revoke unknown: exit %d %q", code, stderr)
	}
	_, stdout, _ = runCLI(t, "token", "list", "--json")
	var list api.TokenList
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list.Tokens) != 2 {
		t.Fatalf("list --json: %v %s", err, stdout)
	}
	for _, tk := range list.Tokens {
		if (tk.Name == "boot") != (tk.RevokedAt != nil) {
			t.Errorf("token %s: revoked_at %v", tk.Name, tk.RevokedAt)
		}
	}
	// The store has the hash, never the secret.
	st, _, err := openTokenStore(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	row, err := store.ReadValue(t.Context(), st, func(q store.Querier) (store.AuthToken, error) {
		return q.AuthTokenByHash(t.Context(), auth.Hash(secret))
	})
	if err != nil || row.Name != "boot" || row.Hash == secret {
		t.Fatalf("stored row %+v, %v", row, err)
	}
}

// Dev keeps its admin token across restarts while it stays valid, makes a
// new one once it is revoked, and gives its workers a fresh worker token
// each start, revoking the previous one.
func TestDevTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "millrace.db")
	file1, w1, err := devTokens(ctx, db, dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file1)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, %v", fi, err)
	}
	admin1 := readSecret(file1)
	file2, w2, err := devTokens(ctx, db, dir)
	if err != nil {
		t.Fatal(err)
	}
	if file2 != file1 || readSecret(file2) != admin1 {
		t.Fatal("a restart replaced a valid admin token")
	}
	if w1 == w2 || !strings.HasPrefix(w2, auth.APIPrefix) {
		t.Fatalf("worker tokens %q then %q: want a fresh one", w1, w2)
	}
	st, _, err := openTokenStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	role := func(secret string) (string, bool) {
		row, err := store.ReadValue(ctx, st, func(q store.Querier) (store.AuthToken, error) {
			return q.AuthTokenByHash(ctx, auth.Hash(secret))
		})
		if err != nil {
			t.Fatal(err)
		}
		return row.Role, row.RevokedAt == nil
	}
	if r, live := role(w1); r != api.RoleWorker || live {
		t.Errorf("first worker token: role %s live %v, want revoked worker", r, live)
	}
	if r, live := role(w2); r != api.RoleWorker || !live {
		t.Errorf("second worker token: role %s live %v", r, live)
	}
	if r, live := role(admin1); r != api.RoleAdmin || !live {
		t.Errorf("admin token: role %s live %v", r, live)
	}
	if _, err := auth.RevokeToken(ctx, st, devAdminName); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, _, err := devTokens(ctx, db, dir); err != nil {
		t.Fatal(err)
	}
	if readSecret(file1) == admin1 {
		t.Fatal("a revoked admin token was kept")
	}
}
