// Package pgdriver is the PostgreSQL implementation of store.Driver, built on
// pgx and pgxpool.
//
// Every statement on the hot path (claim, event/command/outbox inserts) is a
// single round trip and relies on pgx's per-connection statement cache, so
// after warm-up the server only executes already-prepared plans.
package pgdriver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/millrace/millrace/internal/store"
)

// DriverName is what Driver.Name reports.
const DriverName = "postgres"

// TestURLEnv names the environment variable that points tests at a
// PostgreSQL database; DefaultTestURL is used when it is unset.
const (
	TestURLEnv     = "MILLRACE_TEST_DATABASE_URL"
	DefaultTestURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// searchPathParam is the run-time parameter that selects the schema.
const searchPathParam = "search_path"

// TestURL returns the database URL tests should use: $MILLRACE_TEST_DATABASE_URL
// or DefaultTestURL.
func TestURL() string {
	if u := os.Getenv(TestURLEnv); u != "" {
		return u
	}
	return DefaultTestURL
}

// DefaultMaxConns is the pool's cap when DATABASE_URL sets no
// pool_max_conns: 16, or 4 per CPU on bigger machines. pgxpool's own
// default, max(4, CPUs), starves a server on a small node: every submit,
// claim batch, report, heartbeat, relay pass and reaper pass of the whole
// worker fleet goes through this one pool, and a wait for a connection
// stretched submits past 30 s in the fault matrix (docs/decisions.md).
func DefaultMaxConns() int32 { return int32(max(16, 4*runtime.NumCPU())) }

// Options tunes Open.
type Options struct {
	// Schema, when set, is created if missing and becomes the search_path of
	// every pooled connection, so all tables live in it. It overrides a
	// search_path given in the URL.
	Schema string
	// MaxConns caps the pool; 0 means pool_max_conns from the URL, or
	// DefaultMaxConns when the URL has none.
	MaxConns int32
}

// Driver is a store.Driver backed by a pgxpool.Pool.
type Driver struct {
	pool   *pgxpool.Pool
	schema string // schema tables live in; "" means the server default
}

var _ store.Driver = (*Driver)(nil)

// Open connects to the database at url, verifies the connection and creates
// the target schema if needed. It does not migrate; call Migrate.
func Open(ctx context.Context, url string, opts Options) (*Driver, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: parse database URL: %w (expected e.g. postgres://user:password@host:5432/db?sslmode=disable; check DATABASE_URL)", err)
	}
	switch {
	case opts.MaxConns > 0:
		cfg.MaxConns = opts.MaxConns
	case !strings.Contains(url, "pool_max_conns="):
		cfg.MaxConns = DefaultMaxConns()
	}
	if opts.Schema != "" {
		cfg.ConnConfig.RuntimeParams[searchPathParam] = pgx.Identifier{opts.Schema}.Sanitize()
	}
	schema := firstSchema(cfg.ConnConfig.RuntimeParams[searchPathParam])

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: create pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgdriver: connect to PostgreSQL at %s:%d (database %q, user %q): %w; check DATABASE_URL and that the server is running and reachable",
			cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, cfg.ConnConfig.User, err)
	}
	if schema != "" {
		if err := createSchema(ctx, pool, schema); err != nil {
			pool.Close()
			return nil, err
		}
	}
	trackPool(pool)
	return &Driver{pool: pool, schema: schema}, nil
}

// createSchema creates schema if it does not exist. Concurrent CREATE SCHEMA
// IF NOT EXISTS can still collide on the catalog's unique index, so losing
// that race counts as success.
func createSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	_, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P06") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgdriver: create schema %q: %w; the database user needs CREATE privilege on the database", schema, err)
	}
	return nil
}

// firstSchema extracts the first schema named in a search_path value, the
// one CREATE TABLE uses. "$user" and an empty path yield "" (nothing to
// create).
func firstSchema(searchPath string) string {
	first, _, _ := strings.Cut(searchPath, ",")
	first = strings.TrimSpace(first)
	if len(first) >= 2 && first[0] == '"' && first[len(first)-1] == '"' {
		first = strings.ReplaceAll(first[1:len(first)-1], `""`, `"`)
		if first == "$user" {
			return ""
		}
		return first
	}
	if strings.HasPrefix(first, "$") {
		return ""
	}
	// Unquoted identifiers fold to lower case, as the server does.
	return strings.ToLower(first)
}

// Name implements store.Driver.
func (d *Driver) Name() string { return DriverName }

// Schema reports the schema the driver's tables live in ("" when the server
// default search_path applies).
func (d *Driver) Schema() string { return d.schema }

// Pool exposes the underlying pool for diagnostics and tests.
func (d *Driver) Pool() *pgxpool.Pool { return d.pool }

// Close releases all connections. It waits for connections in use to be
// returned, so finish every Tx first.
func (d *Driver) Close() error {
	untrackPool(d.pool)
	d.pool.Close()
	return nil
}

// Begin implements store.Driver. Transactions run at READ COMMITTED; the
// conditional UPDATEs re-check their WHERE clause against the latest row
// version, which is what makes concurrent claims safe.
func (d *Driver) Begin(ctx context.Context) (store.Tx, error) {
	p, err := beginPipe(ctx, d.pool)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: begin transaction: %w", err)
	}
	return &tx{querier: querier{db: p}, tx: p}, nil
}

// Read implements store.Driver. Reads go straight to the pool: plain
// SELECTs take no row locks in PostgreSQL.
func (d *Driver) Read(ctx context.Context, fn func(q store.Querier) error) error {
	return fn(querier{db: d.pool})
}
