package pgdriver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/storetest"
)

// latestMigration is the highest version embedded in migrations/.
const latestMigration = 12

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Driver { return pgtest.Open(t) })
}

type testBundle struct {
	t   *testing.T
	ctx context.Context
	drv *pgdriver.Driver
	now time.Time
}

// setup gives each test a migrated driver in its own schema.
func setup(t *testing.T) *testBundle {
	t.Helper()
	return &testBundle{
		t:   t,
		ctx: t.Context(),
		drv: pgtest.Open(t),
		now: time.Now().UTC().Truncate(time.Microsecond),
	}
}

// write runs fn in one committed transaction of d.
func write(ctx context.Context, d store.Driver, fn func(tx store.Tx) error) error {
	tx, err := d.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// openUnmigrated opens a driver on url and closes it when the test ends.
func openUnmigrated(t *testing.T, url string, opts pgdriver.Options) *pgdriver.Driver {
	t.Helper()
	d, err := pgdriver.Open(t.Context(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestSchemaIsolation(t *testing.T) {
	t.Parallel()
	a, b := setup(t), setup(t)
	if a.drv.Schema() == b.drv.Schema() || a.drv.Schema() == "" {
		t.Fatalf("schemas %q and %q, want two distinct non-empty ones", a.drv.Schema(), b.drv.Schema())
	}
	if err := write(a.ctx, a.drv, func(tx store.Tx) error {
		return tx.ExecutionInsert(a.ctx, store.Execution{ExecutionID: 1, CatalogID: 1, Path: "p", Version: 1, StartedAt: a.now})
	}); err != nil {
		t.Fatalf("ExecutionInsert in schema a: %v", err)
	}
	err := b.drv.Read(b.ctx, func(q store.Querier) error {
		_, err := q.ExecutionGet(b.ctx, 1)
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("schema b sees schema a's execution: err = %v, want ErrNotFound", err)
	}
	// The same id is free in schema b.
	if err := write(b.ctx, b.drv, func(tx store.Tx) error {
		return tx.ExecutionInsert(b.ctx, store.Execution{ExecutionID: 1, CatalogID: 1, Path: "p", Version: 1, StartedAt: b.now})
	}); err != nil {
		t.Fatalf("ExecutionInsert of the same id in schema b: %v", err)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewSchema(t)

	// Separate pools stand in for separate server processes.
	const migrators = 4
	drivers := make([]*pgdriver.Driver, migrators)
	for i := range drivers {
		drivers[i] = openUnmigrated(t, url, pgdriver.Options{})
	}
	if v, err := drivers[0].MigrationVersion(ctx); err != nil || v != 0 {
		t.Fatalf("MigrationVersion before Migrate = %d, %v; want 0, nil", v, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, migrators)
	for i, d := range drivers {
		wg.Go(func() { errs[i] = d.Migrate(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
	if err := drivers[0].Migrate(ctx); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	v, err := drivers[0].MigrationVersion(ctx)
	if err != nil || v != latestMigration {
		t.Fatalf("MigrationVersion = %d, %v; want %d, nil", v, err, latestMigration)
	}
	var rows int
	if err := drivers[0].Pool().QueryRow(ctx, "SELECT count(*) FROM millrace_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != latestMigration {
		t.Fatalf("millrace_migrations has %d rows, want %d (each version recorded once)", rows, latestMigration)
	}
}

// TestMigrateUpgradeBackfills upgrades a database holding rows written
// under migration 1: the new NOT NULL times must take each row's created_at
// and the new counters their zero defaults.
func TestMigrateUpgradeBackfills(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := openUnmigrated(t, pgtest.NewSchema(t), pgdriver.Options{})
	if err := pgdriver.MigrateTo(ctx, d, 1); err != nil {
		t.Fatalf("migrate to version 1: %v", err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	published := created.Add(time.Hour)
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO executions (execution_id, catalog_id, path, version, status, started_at)
			VALUES (1, 1, 'p', 1, 'running', $1)`, []any{created}},
		{`INSERT INTO commands (event_id, execution_id, command_id, step, tool, status, publishes, published_at, created_at, updated_at)
			VALUES (2, 1, '1:s:2', 's', '{"kind":"noop"}', 'issued', 2, $2, $1, $1)`, []any{created, published}},
		{`INSERT INTO outbox (id, event_id, subject, msg_id, payload, created_at)
			VALUES (3, 2, 'subj', '2-1', 'x', $1)`, []any{created}},
	} {
		if _, err := d.Pool().Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("insert version-1 rows: %v", err)
		}
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from version 1: %v", err)
	}
	if v, err := d.MigrationVersion(ctx); err != nil || v != latestMigration {
		t.Fatalf("MigrationVersion = %d, %v; want %d", v, err, latestMigration)
	}
	err := d.Read(ctx, func(q store.Querier) error {
		c, err := q.CommandGet(ctx, 2)
		if err != nil {
			return err
		}
		if !c.AvailableAt.Equal(created) || !c.PublishedAt.Equal(published) || c.LoopID != 0 || c.LoopIndex != 0 || c.Retry != 0 {
			return fmt.Errorf("upgraded command: available_at %s published_at %s loop %d/%d retry %d; want available_at = created_at %s, published_at kept %s, zeros",
				c.AvailableAt, c.PublishedAt, c.LoopID, c.LoopIndex, c.Retry, created, published)
		}
		e, err := q.ExecutionGet(ctx, 1)
		if err != nil {
			return err
		}
		if e.ParentExecutionID != 0 || e.Context != nil {
			return fmt.Errorf("upgraded execution parent = %d, context %q; want 0, nil", e.ParentExecutionID, e.Context)
		}
		msgs, err := q.OutboxFetch(ctx, created, 10)
		if err != nil {
			return err
		}
		if len(msgs) != 1 || !msgs[0].AvailableAt.Equal(created) {
			return fmt.Errorf("OutboxFetch at created_at after upgrade = %+v, want the one row with available_at = created_at", msgs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The back-filled columns are NOT NULL from now on.
	var nullable int
	if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
		WHERE table_schema = $1 AND column_name = 'available_at' AND table_name IN ('commands', 'outbox') AND is_nullable = 'NO'`,
		d.Schema()).Scan(&nullable); err != nil {
		t.Fatal(err)
	}
	if nullable != 2 {
		t.Fatalf("%d of commands.available_at and outbox.available_at are NOT NULL, want both", nullable)
	}
}

func TestSearchPathInURL(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("ExistingSchema", func(t *testing.T) {
		t.Parallel()
		url := pgtest.NewSchema(t)
		d := openUnmigrated(t, url, pgdriver.Options{})
		if !strings.Contains(url, "search_path="+d.Schema()) || d.Schema() == "" {
			t.Fatalf("driver schema %q does not match URL %s", d.Schema(), url)
		}
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		var n int
		if err := d.Pool().QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = $1 AND table_name IN ('catalog', 'executions', 'events', 'commands', 'outbox',
				'loops', 'credentials', 'blobs', 'millrace_migrations')`,
			d.Schema()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 9 {
			t.Fatalf("found %d of 9 tables in schema %s", n, d.Schema())
		}
	})

	t.Run("MissingSchemaIsCreated", func(t *testing.T) {
		t.Parallel()
		// NewSchema registers the drop; removing the schema first makes
		// Open face a search_path naming a schema that does not exist.
		url := pgtest.NewSchema(t)
		d := openUnmigrated(t, url, pgdriver.Options{})
		if _, err := d.Pool().Exec(ctx, `DROP SCHEMA "`+d.Schema()+`"`); err != nil {
			t.Fatal(err)
		}
		d2 := openUnmigrated(t, url, pgdriver.Options{})
		if err := d2.Migrate(ctx); err != nil {
			t.Fatalf("Migrate after Open recreated the schema: %v", err)
		}
		if v, err := d2.MigrationVersion(ctx); err != nil || v != latestMigration {
			t.Fatalf("MigrationVersion = %d, %v; want %d", v, err, latestMigration)
		}
	})

	t.Run("OptionOverridesURL", func(t *testing.T) {
		t.Parallel()
		url := pgtest.NewSchema(t)
		other := pgtest.NewSchema(t)
		otherSchema := openUnmigrated(t, other, pgdriver.Options{}).Schema()
		d := openUnmigrated(t, url, pgdriver.Options{Schema: otherSchema})
		if d.Schema() != otherSchema {
			t.Fatalf("Schema() = %q, want the option's %q", d.Schema(), otherSchema)
		}
		var sp string
		if err := d.Pool().QueryRow(ctx, "SELECT current_schema()").Scan(&sp); err != nil {
			t.Fatal(err)
		}
		if sp != otherSchema {
			t.Fatalf("current_schema() = %q, want %q", sp, otherSchema)
		}
	})
}

func TestCatalogInsertConcurrentSamePath(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const inserters = 8
	var wg sync.WaitGroup
	versions := make([]int, inserters)
	errs := make([]error, inserters)
	for i := range inserters {
		wg.Go(func() {
			errs[i] = write(b.ctx, b.drv, func(tx store.Tx) error {
				e, err := tx.CatalogInsert(b.ctx, int64(100+i), "flows/race", "race", fmt.Sprint(i), b.now)
				versions[i] = e.Version
				return err
			})
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for i := range inserters {
		if errs[i] != nil {
			t.Fatalf("inserter %d: %v", i, errs[i])
		}
		seen[versions[i]] = true
	}
	for v := 1; v <= inserters; v++ {
		if !seen[v] {
			t.Fatalf("versions %v, want each of 1..%d exactly once", versions, inserters)
		}
	}
}

func TestRollbackAfterCommitIsHarmless(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tx, err := b.drv.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if err := tx.Rollback(b.ctx); err != nil {
		t.Fatalf("Rollback after Commit = %v, want nil", err)
	}
}

func TestSavepointRejectsUnsafeNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tx, err := b.drv.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	for _, name := range []string{"", "A", "x; DROP TABLE commands", "sp-1"} {
		if err := tx.Savepoint(b.ctx, name); err == nil {
			t.Errorf("Savepoint(%q) succeeded, want an error", name)
		}
	}
	if err := tx.Savepoint(b.ctx, "sp_1"); err != nil {
		t.Fatalf("Savepoint(sp_1): %v", err)
	}
}

// LockExecution must make a second writer wait until the first commits.
func TestLockExecutionBlocksSecondWriter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := write(b.ctx, b.drv, func(tx store.Tx) error {
		return tx.ExecutionInsert(b.ctx, store.Execution{ExecutionID: 7, CatalogID: 1, Path: "p", Version: 1, StartedAt: b.now})
	}); err != nil {
		t.Fatal(err)
	}
	first, err := b.drv.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(b.ctx)
	if _, err := first.LockExecution(b.ctx, 7); err != nil {
		t.Fatalf("LockExecution: %v", err)
	}

	locked := make(chan error, 1)
	go func() {
		locked <- write(b.ctx, b.drv, func(tx store.Tx) error {
			e, err := tx.LockExecution(b.ctx, 7)
			if err == nil && e.Status != api.ExecCompleted {
				err = fmt.Errorf("second writer saw status %q, want the first writer's committed %q", e.Status, api.ExecCompleted)
			}
			return err
		})
	}()
	select {
	case err := <-locked:
		t.Fatalf("second LockExecution returned (%v) while the first transaction held the lock", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := first.ExecutionFinish(b.ctx, 7, api.ExecCompleted, nil, "", b.now); err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		if err != nil {
			t.Fatalf("second writer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second LockExecution still blocked after the first transaction committed")
	}
}

func TestOpenErrorsSayWhatToCheck(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for name, url := range map[string]string{
		"Unparsable": "postgres://%zz",
		// Port 1 on loopback refuses connections immediately.
		"Unreachable": "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5",
	} {
		_, err := pgdriver.Open(ctx, url, pgdriver.Options{})
		if err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
			t.Errorf("%s: Open error = %v, want one that mentions DATABASE_URL", name, err)
		}
	}
}

// go test -bench Hot ./internal/store/pgdriver/
func BenchmarkHot(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Driver { return pgtest.Open(b) })
}

// TestMigrateUpgradeKeepsQueries upgrades a database holding a query written
// under migration 5: it reads back as the SQL query it was, with empty
// metric-query fields.
func TestMigrateUpgradeKeepsQueries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := openUnmigrated(t, pgtest.NewSchema(t), pgdriver.Options{})
	if err := pgdriver.MigrateTo(ctx, d, 5); err != nil {
		t.Fatalf("migrate to version 5: %v", err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	if _, err := d.Pool().Exec(ctx, `INSERT INTO queries (query_uuid, project_id, sql, status, columns, created_at, updated_at)
		VALUES ('q-1', 7, 'SELECT 1', 'ready', '[ {"name":"x"} ]', $1, $1)`, created); err != nil {
		t.Fatalf("insert a version-5 query: %v", err)
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from version 5: %v", err)
	}
	err := d.Read(ctx, func(q store.Querier) error {
		got, err := q.QueryGet(ctx, "q-1")
		if err != nil {
			return err
		}
		if got.SQL != "SELECT 1" || string(got.Columns) != `[ {"name":"x"} ]` || got.Kind != "" || got.MetricQuery != nil ||
			got.Target != "" || got.PreAggregate != nil || got.BuildUUID != "" {
			return fmt.Errorf("upgraded query = %+v; want the SQL query unchanged with empty metric fields", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
