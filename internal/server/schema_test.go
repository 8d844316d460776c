package server_test

import (
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// migratedSchema returns the URL of a fresh, fully migrated schema and
// runs sql in it (with $LATEST replaced by the binary's latest migration).
func migratedSchema(t *testing.T, sql string) (url string, latest int) {
	t.Helper()
	url = pgtest.NewSchema(t)
	d, err := pgdriver.Open(t.Context(), url, pgdriver.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if latest, err = d.LatestMigration(); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), strings.ReplaceAll(sql, "$LATEST", strconv.Itoa(latest))); err != nil {
		t.Fatal(err)
	}
	return url, latest
}

// MILLRACE_MIGRATE=false: a schema behind the binary (the hook Job did not
// run, or failed) stops the server with what to do, and leaves the schema
// as it was.
func TestMigrateFalseRefusesSchemaBehind(t *testing.T) {
	t.Parallel()
	// The last migration's bookkeeping row gone: the database reads as one
	// migration behind (its tables stay, so nothing else breaks).
	url, latest := migratedSchema(t, "DELETE FROM millrace_migrations WHERE version = $LATEST")
	cfg := servertest.Config(t)
	cfg.DatabaseURL, cfg.Migrate = url, false
	srv, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		srv.Close()
		t.Fatal("server started on a schema behind it with MILLRACE_MIGRATE=false")
	}
	for _, want := range []string{"at migration " + strconv.Itoa(latest-1), "needs " + strconv.Itoa(latest), "run `millrace migrate`", "MILLRACE_MIGRATE=true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if applied, _ := versions(t, url); applied != latest-1 {
		t.Errorf("refusing server changed the schema to %d", applied)
	}
}

// A schema ahead of the binary (an older server during a rollback) is
// served with a warning naming both versions.
func TestMigrateFalseServesSchemaAhead(t *testing.T) {
	t.Parallel()
	url, latest := migratedSchema(t, "INSERT INTO millrace_migrations (version) VALUES ($LATEST + 1)")
	logs := &syncBuffer{}
	h := servertest.StartWithLog(t, func(c *config.Server) { c.DatabaseURL, c.Migrate = url, false }, logs)
	if _, err := h.API.Health(t.Context()); err != nil {
		t.Fatalf("health on a schema ahead: %v", err)
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "schema is newer than this server") {
			line = l
		}
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "schema="+strconv.Itoa(latest+1)) || !strings.Contains(line, "server_schema="+strconv.Itoa(latest)) {
		t.Errorf("no WARN naming schema %d and server_schema %d; log:\n%s", latest+1, latest, logs)
	}
}

func versions(t *testing.T, url string) (applied, latest int) {
	t.Helper()
	d, err := pgdriver.Open(t.Context(), url, pgdriver.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if applied, err = d.MigrationVersion(t.Context()); err != nil {
		t.Fatal(err)
	}
	latest, _ = d.LatestMigration()
	return applied, latest
}
