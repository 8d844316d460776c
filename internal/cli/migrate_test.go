package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// migrateJSON runs `millrace migrate --json` with args and decodes its
// report; it fails the test on a non-zero exit.
func migrateJSON(t *testing.T, args ...string) migrateReport {
	t.Helper()
	code, stdout, stderr := runCLI(t, append([]string{"migrate", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("migrate %v: exit %d\nstdout %s\nstderr %s", args, code, stdout, stderr)
	}
	var rep migrateReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("migrate --json: %v\n%s", err, stdout)
	}
	return rep
}

// schemaVersion reads the applied migration version of the database at
// url, as a server would.
func schemaVersion(t *testing.T, url string) (applied, latest int) {
	t.Helper()
	d, err := pgdriver.Open(t.Context(), url, pgdriver.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	applied, err = d.MigrationVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	latest, err = d.LatestMigration()
	if err != nil {
		t.Fatal(err)
	}
	return applied, latest
}

// A fresh schema goes from 0 to the binary's latest migration; a second
// run applies nothing and says so.
func TestMigrateFreshSchema(t *testing.T) {
	t.Parallel()
	url := pgtest.NewSchema(t)
	if applied, _ := schemaVersion(t, url); applied != 0 {
		t.Fatalf("fresh schema at migration %d, want 0", applied)
	}
	rep := migrateJSON(t, "--database-url", url)
	applied, latest := schemaVersion(t, url)
	if rep.Driver != "postgres" || rep.From != 0 || rep.To != latest || rep.Latest != latest || applied != latest {
		t.Fatalf("first run: %+v; database now at %d, binary's latest %d", rep, applied, latest)
	}
	if latest < 8 {
		t.Fatalf("latest migration %d: issue 13's migration 8 is missing", latest)
	}
	if again := migrateJSON(t, "--database-url", url); again.From != latest || again.To != latest {
		t.Fatalf("second run: %+v, want from = to = %d", again, latest)
	}
	code, stdout, stderr := runCLI(t, "migrate", "--database-url", url)
	if code != 0 || !strings.Contains(stdout, "up to date, nothing applied") {
		t.Fatalf("third run, as text: exit %d\n%s%s", code, stdout, stderr)
	}

	// A schema newer than the binary (an older millrace during a
	// rollback): nothing to apply, not an error, and it says so.
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "INSERT INTO millrace_migrations (version) VALUES ($1)", latest+1); err != nil {
		t.Fatal(err)
	}
	if ahead := migrateJSON(t, "--database-url", url); ahead.From != latest+1 || ahead.To != latest+1 || ahead.Latest != latest {
		t.Fatalf("schema ahead: %+v, want from = to = %d, latest %d", ahead, latest+1, latest)
	}
	code, stdout, stderr = runCLI(t, "migrate", "--database-url", url)
	if code != 0 || !strings.Contains(stdout, "newer than this binary's") {
		t.Fatalf("schema ahead, as text: exit %d\n%s%s", code, stdout, stderr)
	}
}

// --ensure-tokens registers the deployment's tokens once (running it again
// changes nothing), and the server accepts them with their roles, here one
// started with MILLRACE_MIGRATE=false on the migrated schema.
func TestMigrateEnsureTokens(t *testing.T) {
	t.Parallel()
	url := pgtest.NewSchema(t)
	worker, gateway, admin := auth.NewSecret(store.TokenAPI), auth.NewSecret(store.TokenAPI), auth.NewSecret(store.TokenAPI)
	args := []string{"--database-url", url, "--ensure-tokens", "--worker-token", worker, "--gateway-token", gateway, "--admin-token", admin}

	first := migrateJSON(t, args...)
	want := map[string]ensuredReport{
		"MILLRACE_WORKER_TOKEN":  {Env: "MILLRACE_WORKER_TOKEN", Name: "helm-worker", Role: api.RoleWorker, Made: true},
		"MILLRACE_GATEWAY_TOKEN": {Env: "MILLRACE_GATEWAY_TOKEN", Name: "helm-gateway", Role: api.RoleOperator, Made: true},
		"MILLRACE_ADMIN_TOKEN":   {Env: "MILLRACE_ADMIN_TOKEN", Name: "helm-admin", Role: api.RoleAdmin, Made: true},
	}
	if len(first.Tokens) != len(want) {
		t.Fatalf("first run registered %+v, want %d tokens", first.Tokens, len(want))
	}
	ids := map[string]int64{}
	for _, got := range first.Tokens {
		w := want[got.Env]
		w.ID = got.ID
		if got != w || got.ID == 0 {
			t.Errorf("first run: %+v, want %+v", got, w)
		}
		ids[got.Env] = got.ID
	}
	second := migrateJSON(t, args...)
	for _, got := range second.Tokens {
		if got.Made || got.ID != ids[got.Env] {
			t.Errorf("second run: %+v, want the same token (id %d), not made again", got, ids[got.Env])
		}
	}
	if len(second.Tokens) != 3 {
		t.Errorf("second run: %+v, want all three reported", second.Tokens)
	}

	h := servertest.Start(t, servertest.WithAuth(func(c *config.Server) {
		c.DatabaseURL = url
		c.Migrate = false
	}))
	for secret, role := range map[string]string{worker: api.RoleWorker, gateway: api.RoleOperator, admin: api.RoleAdmin} {
		who, err := h.API.WithToken(secret).WhoAmI(t.Context())
		if err != nil || who.Role != role {
			t.Errorf("whoami with the %s token: %+v, %v", role, who, err)
		}
	}
	// The admin token works as an admin: it may list tokens, and sees the
	// three.
	list, err := h.API.WithToken(admin).TokenList(t.Context())
	if err != nil || len(list) != 3 {
		t.Errorf("token list with helm-admin: %d tokens, %v; want 3", len(list), err)
	}
	// Without the flag the tokens are not looked at: a migrate run never
	// fails on them.
	if rep := migrateJSON(t, "--database-url", url, "--worker-token", "oops"); len(rep.Tokens) != 0 {
		t.Errorf("without --ensure-tokens: %+v", rep.Tokens)
	}
}

// A malformed token fails before the store is touched; a secret given for
// two roles, or one revoked since, is a conflict the message explains.
func TestMigrateEnsureTokensErrors(t *testing.T) {
	t.Parallel()
	url := pgtest.NewSchema(t)
	code, _, stderr := runCLI(t, "migrate", "--database-url", url, "--ensure-tokens", "--worker-token", "changeme")
	if code == 0 || !strings.Contains(stderr, "MILLRACE_WORKER_TOKEN") || !strings.Contains(stderr, "mrt_") {
		t.Fatalf("malformed token: exit %d, stderr %q; want an error naming MILLRACE_WORKER_TOKEN and the form", code, stderr)
	}
	if applied, _ := schemaVersion(t, url); applied != 0 {
		t.Errorf("a malformed token still migrated the schema to %d", applied)
	}

	shared := auth.NewSecret(store.TokenAPI)
	code, _, stderr = runCLI(t, "migrate", "--database-url", url, "--ensure-tokens", "--worker-token", shared, "--admin-token", shared)
	if code == 0 || !strings.Contains(stderr, "MILLRACE_ADMIN_TOKEN") || !strings.Contains(stderr, "distinct secret per role") {
		t.Fatalf("one secret for two roles: exit %d, stderr %q", code, stderr)
	}

	code, _, stderr = runCLI(t, "token", "revoke", "helm-worker", "--database-url", url)
	if code != 0 {
		t.Fatalf("token revoke helm-worker: exit %d %s", code, stderr)
	}
	code, _, stderr = runCLI(t, "migrate", "--database-url", url, "--ensure-tokens", "--worker-token", shared)
	if code == 0 || !strings.Contains(stderr, "revoked") || !strings.Contains(stderr, "new secret") {
		t.Fatalf("revoked token: exit %d, stderr %q", code, stderr)
	}
}

// The report names the database without its password.
func TestRedactedStore(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://millrace:s3cret@db:5432/millrace?sslmode=require": "postgres://millrace:xxxxx@db:5432/millrace?sslmode=require",
		"postgres://db/millrace":         "postgres://db/millrace",
		"sqlite:/var/lib/millrace/m.db":  "sqlite:/var/lib/millrace/m.db",
		"host=db user=u password=s3cret": "DATABASE_URL",
		"postgres://u:s3cret@db%zz/x":    "DATABASE_URL",
	} {
		if got := redactedStore(in); got != want {
			t.Errorf("redactedStore(%q) = %q, want %q", in, got, want)
		}
	}
}
