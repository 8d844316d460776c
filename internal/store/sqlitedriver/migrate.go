package sqlitedriver

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one versioned schema change, from migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS millrace_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at INTEGER NOT NULL
)`

// loadMigrations returns the embedded migrations in version order.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	out := make([]migration, 0, len(names))
	seen := map[int]string{}
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		prefix, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(prefix)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version number, like 0002_add_x.sql", base)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, base, v)
		}
		seen[v] = base
		body, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// Migrate implements store.Driver. Each pending migration runs in its own
// BEGIN IMMEDIATE transaction together with its bookkeeping row, so
// concurrent Migrate calls, in this process or others, serialise on the
// write lock and each version is applied exactly once.
func (d *Driver) Migrate(ctx context.Context) error {
	migs, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("sqlitedriver: load migrations: %w", err)
	}
	for _, m := range migs {
		if err := d.apply(ctx, m); err != nil {
			return fmt.Errorf("sqlitedriver: migration %s: %w", m.name, err)
		}
	}
	d.prepare(ctx)
	return nil
}

func (d *Driver) apply(ctx context.Context, m migration) error {
	t, err := d.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = t.Rollback() }()
	if _, err := t.ExecContext(ctx, createMigrationsTable); err != nil {
		return err
	}
	var applied int
	err = t.QueryRowContext(ctx, `SELECT count(*) FROM millrace_migrations WHERE version = ?`, m.version).Scan(&applied)
	if err != nil {
		return err
	}
	if applied > 0 {
		return nil
	}
	if _, err := t.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	_, err = t.ExecContext(ctx, `INSERT INTO millrace_migrations (version, applied_at) VALUES (?, ?)`,
		m.version, time.Now().UnixMicro())
	if err != nil {
		return err
	}
	return t.Commit()
}

// LatestMigration implements store.Driver.
func (d *Driver) LatestMigration() (int, error) {
	migs, err := loadMigrations()
	if err != nil {
		return 0, fmt.Errorf("sqlitedriver: load migrations: %w", err)
	}
	return migs[len(migs)-1].version, nil
}

// MigrationVersion implements store.Driver; it is 0 for a database that was
// never migrated.
func (d *Driver) MigrationVersion(ctx context.Context) (int, error) {
	var v int
	err := d.reader.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM millrace_migrations`).Scan(&v)
	if err != nil {
		if exists, err2 := d.tableExists(ctx, "millrace_migrations"); err2 == nil && !exists {
			return 0, nil
		}
		return 0, fmt.Errorf("sqlitedriver: read migration version: %w", err)
	}
	return v, nil
}

func (d *Driver) tableExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := d.reader.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, name).Scan(&n)
	if err != nil && err != sql.ErrNoRows {
		return false, err
	}
	return n > 0, nil
}
