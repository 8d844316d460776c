package pgdriver

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Advisory lock classes (first key of the two-int form). The second key is a
// hash of the schema or catalog path, so tests isolated in different schemas
// never wait on each other's migrations.
const (
	lockClassMigrate int32 = 0x6d696772 // "migr"
	lockClassCatalog int32 = 0x63617461 // "cata"
)

// unlockTimeout bounds releasing the migration lock after ctx may already be
// cancelled; if it fails the lock dies with the connection anyway.
const unlockTimeout = 5 * time.Second

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded NNNN_name.sql files in version order.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("pgdriver: migration file %q must be named NNNN_description.sql", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("pgdriver: migrations %q and %q share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// Migrate implements store.Driver. A session advisory lock keyed on the
// current schema serialises concurrent migrators; each migration and its
// bookkeeping row commit together, so a crash leaves no half-applied version.
func (d *Driver) Migrate(ctx context.Context) error {
	migs, err := loadMigrations()
	if err != nil {
		return err
	}
	return d.migrate(ctx, migs)
}

// migrate applies the pending ones among migs, which are in version order.
func (d *Driver) migrate(ctx context.Context, migs []migration) error {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgdriver: migrate: acquire connection: %w", err)
	}
	defer conn.Release()

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1, hashtext(COALESCE(current_schema(), '')))", lockClassMigrate); err != nil {
		return fmt.Errorf("pgdriver: migrate: take advisory lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1, hashtext(COALESCE(current_schema(), '')))", lockClassMigrate); err != nil {
			// Do not hand a connection that may still hold the lock back to the pool.
			_ = conn.Conn().Close(uctx)
		}
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS millrace_migrations (
		version    integer     PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("pgdriver: migrate: create millrace_migrations: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM millrace_migrations").Scan(&current); err != nil {
		return fmt.Errorf("pgdriver: migrate: read version: %w", err)
	}
	for _, m := range migs {
		if m.version <= current {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(t pgx.Tx) error {
			if _, err := t.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := t.Exec(ctx, "INSERT INTO millrace_migrations (version) VALUES ($1)", m.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("pgdriver: apply migration %s: %w", m.name, err)
		}
	}
	return nil
}

// LatestMigration implements store.Driver.
func (d *Driver) LatestMigration() (int, error) {
	migs, err := loadMigrations()
	if err != nil {
		return 0, err
	}
	return migs[len(migs)-1].version, nil
}

// MigrationVersion implements store.Driver; 0 means nothing is applied yet.
func (d *Driver) MigrationVersion(ctx context.Context) (int, error) {
	var v int
	err := d.pool.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM millrace_migrations").Scan(&v)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pgdriver: read migration version: %w", err)
	}
	return v, nil
}
