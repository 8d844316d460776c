// Package pgtest gives tests their own PostgreSQL schema so they can run in
// parallel against one shared database without seeing each other's rows.
// It lives apart from pgdriver so production code never imports testing.
//
// Tests fail (never skip) when the database is unreachable: CI always has
// PostgreSQL, and a silent skip would hide a broken setup.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/store/pgdriver"
)

// MaxConns caps each test driver's pool; enough for the concurrency tests,
// small enough that many parallel tests stay under max_connections.
const MaxConns = 8

// setupTimeout bounds connecting, migrating and dropping a test schema.
const setupTimeout = 30 * time.Second

// URL returns the database URL for tests: $MILLRACE_TEST_DATABASE_URL or
// pgdriver.DefaultTestURL.
func URL() string { return pgdriver.TestURL() }

// Open returns a migrated driver whose tables live in a fresh schema that is
// dropped when the test ends.
func Open(t testing.TB) *pgdriver.Driver {
	t.Helper()
	schema := schemaName(t)
	ctx, cancel := context.WithTimeout(t.Context(), setupTimeout)
	defer cancel()
	d, err := pgdriver.Open(ctx, URL(), pgdriver.Options{Schema: schema, MaxConns: MaxConns})
	if err != nil {
		t.Fatalf("pgtest: %v (tests need PostgreSQL; set %s to point at it)", err, pgdriver.TestURLEnv)
	}
	// Registered before Close so it runs after it: cleanups are LIFO.
	t.Cleanup(func() { dropSchema(t, schema) })
	t.Cleanup(func() { _ = d.Close() })
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("pgtest: migrate schema %s: %v", schema, err)
	}
	return d
}

// NewSchema creates an empty schema, dropped when the test ends, and returns
// a database URL whose search_path selects it. Hand the URL to another
// process (e.g. `millrace server` via DATABASE_URL); that process migrates it.
func NewSchema(t testing.TB) string {
	t.Helper()
	schema := schemaName(t)
	ctx, cancel := context.WithTimeout(t.Context(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, URL())
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v (tests need PostgreSQL; set %s to point at it)", redacted(URL()), err, pgdriver.TestURLEnv)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() { dropSchema(t, schema) })
	return WithSearchPath(URL(), schema)
}

// WithSearchPath returns dbURL with its search_path run-time parameter set to
// schema. It accepts both URL and keyword/value connection strings.
func WithSearchPath(dbURL, schema string) string {
	if strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://") {
		if u, err := url.Parse(dbURL); err == nil {
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dbURL + " search_path=" + schema
}

// schemaName is a fresh, valid, lower-case identifier.
func schemaName(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("pgtest: random schema name: %v", err)
	}
	return "t_" + hex.EncodeToString(b)
}

// dropSchema runs in a cleanup, after t.Context() has ended.
func dropSchema(t testing.TB, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, URL())
	if err != nil {
		t.Errorf("pgtest: drop schema %s: connect: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("pgtest: drop schema %s: %v", schema, err)
	}
}

// redacted hides a password in a URL for error messages.
func redacted(dbURL string) string {
	if u, err := url.Parse(dbURL); err == nil && u.User != nil {
		return u.Redacted()
	}
	return dbURL
}
