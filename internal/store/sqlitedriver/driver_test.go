package sqlitedriver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/storetest"
)

const (
	// writerGoroutines and writesPerGoroutine size the write-contention
	// tests: enough that an unserialised driver would hit SQLITE_BUSY.
	writerGoroutines   = 32
	writesPerGoroutine = 20
	// processDrivers is how many drivers share one file in the tests that
	// stand in for several processes.
	processDrivers = 4
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Driver { return setup(t).drv })
}

// bundle is what the driver-specific tests share.
type bundle struct {
	t    *testing.T
	ctx  context.Context
	path string
	drv  *Driver
	ids  *ids.Generator
}

// setup opens and migrates a fresh database file in t.TempDir().
func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{t: t, ctx: t.Context(), path: filepath.Join(t.TempDir(), "millrace.db"), ids: ids.New(-1)}
	b.drv = b.open()
	if err := b.drv.Migrate(b.ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return b
}

// open opens another driver on the bundle's file, closed at cleanup.
func (b *bundle) open() *Driver {
	b.t.Helper()
	d, err := Open(b.ctx, b.path)
	if err != nil {
		b.t.Fatalf("Open(%s): %v", b.path, err)
	}
	b.t.Cleanup(func() {
		if err := d.Close(); err != nil {
			b.t.Errorf("Close: %v", err)
		}
	})
	return d
}

// write runs fn in one committed transaction of d.
func write(ctx context.Context, d store.Driver, fn func(tx store.Tx) error) error {
	tx, err := d.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (b *bundle) insertCatalog(d store.Driver, path string) store.CatalogEntry {
	b.t.Helper()
	var e store.CatalogEntry
	err := write(b.ctx, d, func(tx store.Tx) error {
		var err error
		e, err = tx.CatalogInsert(b.ctx, b.ids.Next(), path, "name", "content", time.Now())
		return err
	})
	if err != nil {
		b.t.Fatalf("CatalogInsert %s: %v", path, err)
	}
	return e
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, path string
		ok        bool
	}{
		{"sqlite:millrace.db", "millrace.db", true},
		{"sqlite:data/millrace.db", "data/millrace.db", true},
		{"sqlite://millrace.db", "millrace.db", true},
		{"sqlite:///var/lib/millrace.db", "/var/lib/millrace.db", true},
		{"sqlite:/var/lib/millrace.db", "/var/lib/millrace.db", true},
		{"sqlite::memory:", MemoryPath, true},
		{"sqlite://:memory:", MemoryPath, true},
		{"sqlite:file.db?_pragma=cache_size(2000)", "file.db", true},
		{"SQLITE:upper.db", "upper.db", true},
		{"sqlite:", "", false},
		{"sqlite://", "", false},
		{"sqlite:?x=1", "", false},
		{"postgres://postgres@127.0.0.1/test", "", false},
		{"millrace.db", "", false},
		{"", "", false},
	} {
		path, ok := ParseURL(tc.url)
		if path != tc.path || ok != tc.ok {
			t.Errorf("ParseURL(%q) = %q, %v; want %q, %v", tc.url, path, ok, tc.path, tc.ok)
		}
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.insertCatalog(b.drv, "persist/me")
	if err := b.drv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	d := b.open()
	v, err := d.MigrationVersion(b.ctx)
	if err != nil || v != latestVersion(t) {
		t.Fatalf("MigrationVersion after reopen = %d, %v; want %d", v, err, latestVersion(t))
	}
	if d.prepared.Load() == nil {
		t.Errorf("reopening a migrated database did not prepare the hot statements")
	}
	err = d.Read(b.ctx, func(q store.Querier) error {
		got, err := q.CatalogGet(b.ctx, "persist/me", 0)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("got %+v, want %+v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("CatalogGet after reopen: %v", err)
	}
}

func latestVersion(t *testing.T) int {
	t.Helper()
	migs, err := loadMigrations()
	if err != nil || len(migs) == 0 {
		t.Fatalf("loadMigrations = %d migrations, %v", len(migs), err)
	}
	return migs[len(migs)-1].version
}

func TestMigrate(t *testing.T) {
	t.Parallel()

	t.Run("FreshDatabaseIsVersionZero", func(t *testing.T) {
		t.Parallel()
		d, err := Open(t.Context(), filepath.Join(t.TempDir(), "fresh.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer d.Close()
		if v, err := d.MigrationVersion(t.Context()); err != nil || v != 0 {
			t.Fatalf("MigrationVersion before Migrate = %d, %v; want 0, nil", v, err)
		}
		if d.prepared.Load() != nil {
			t.Fatalf("statements prepared against a database without schema")
		}
		// Until Migrate runs, writes fail with the SQLite error, not a hang.
		err = write(t.Context(), d, func(tx store.Tx) error {
			_, err := tx.CatalogInsert(t.Context(), 1, "p", "n", "c", time.Now())
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "no such table") {
			t.Fatalf("CatalogInsert before Migrate = %v, want a no such table error", err)
		}
	})

	t.Run("IdempotentWithOneRowPerVersion", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if b.drv.prepared.Load() == nil {
			t.Fatalf("Migrate did not prepare the hot statements")
		}
		for range 3 {
			if err := b.drv.Migrate(b.ctx); err != nil {
				t.Fatalf("Migrate again: %v", err)
			}
		}
		if v, err := b.drv.MigrationVersion(b.ctx); err != nil || v != latestVersion(t) {
			t.Fatalf("MigrationVersion = %d, %v; want %d", v, err, latestVersion(t))
		}
		var rows int
		if err := b.drv.reader.QueryRowContext(b.ctx, `SELECT count(*) FROM millrace_migrations`).Scan(&rows); err != nil {
			t.Fatalf("count migrations: %v", err)
		}
		if migs, _ := loadMigrations(); rows != len(migs) {
			t.Fatalf("millrace_migrations has %d rows, want %d (one per migration)", rows, len(migs))
		}
	})

	t.Run("ConcurrentAcrossDrivers", func(t *testing.T) {
		t.Parallel()
		// Several drivers on one new file stand in for processes starting
		// together; the write lock must serialise their migrations.
		b := &bundle{t: t, ctx: t.Context(), path: filepath.Join(t.TempDir(), "shared.db")}
		drivers := make([]*Driver, processDrivers)
		for i := range drivers {
			drivers[i] = b.open()
		}
		errs := make([]error, len(drivers))
		var wg sync.WaitGroup
		for i, d := range drivers {
			wg.Go(func() { errs[i] = d.Migrate(b.ctx) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Migrate on driver %d: %v", i, err)
			}
		}
		for i, d := range drivers {
			if v, err := d.MigrationVersion(b.ctx); err != nil || v != latestVersion(t) {
				t.Fatalf("driver %d MigrationVersion = %d, %v; want %d", i, v, err, latestVersion(t))
			}
		}
	})
}

// TestMigrateUpgradeBackfills upgrades a database holding rows written
// under migration 1: the new NOT NULL times must take each row's created_at
// (not the ALTER TABLE default 0) and the new counters their zero defaults.
func TestMigrateUpgradeBackfills(t *testing.T) {
	t.Parallel()
	b := &bundle{t: t, ctx: t.Context(), path: filepath.Join(t.TempDir(), "old.db")}
	d := b.open()
	migs, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.apply(b.ctx, migs[0]); err != nil {
		t.Fatalf("apply %s: %v", migs[0].name, err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	published := created.Add(time.Hour)
	if _, err := d.writer.ExecContext(b.ctx, `
		INSERT INTO executions (execution_id, catalog_id, path, version, status, started_at) VALUES (1, 1, 'p', 1, 'running', ?1);
		INSERT INTO commands (event_id, execution_id, command_id, step, tool, status, publishes, published_at, created_at, updated_at)
			VALUES (2, 1, '1:s:2', 's', '{"kind":"noop"}', 'issued', 2, ?2, ?1, ?1);
		INSERT INTO outbox (id, event_id, subject, msg_id, payload, created_at) VALUES (3, 2, 'subj', '2-1', x'78', ?1)`,
		created.UnixMicro(), published.UnixMicro()); err != nil {
		t.Fatalf("insert version-1 rows: %v", err)
	}
	if err := d.Migrate(b.ctx); err != nil {
		t.Fatalf("Migrate from version 1: %v", err)
	}
	if v, err := d.MigrationVersion(b.ctx); err != nil || v != latestVersion(t) {
		t.Fatalf("MigrationVersion = %d, %v; want %d", v, err, latestVersion(t))
	}
	err = d.Read(b.ctx, func(q store.Querier) error {
		c, err := q.CommandGet(b.ctx, 2)
		if err != nil {
			return err
		}
		if !c.AvailableAt.Equal(created) || !c.PublishedAt.Equal(published) || c.LoopID != 0 || c.LoopIndex != 0 || c.Retry != 0 {
			return fmt.Errorf("upgraded command: available_at %s published_at %s loop %d/%d retry %d; want available_at = created_at %s, published_at kept %s, zeros",
				c.AvailableAt, c.PublishedAt, c.LoopID, c.LoopIndex, c.Retry, created, published)
		}
		e, err := q.ExecutionGet(b.ctx, 1)
		if err != nil {
			return err
		}
		if e.ParentExecutionID != 0 || e.Context != nil {
			return fmt.Errorf("upgraded execution parent = %d, context %q; want 0, nil", e.ParentExecutionID, e.Context)
		}
		msgs, err := q.OutboxFetch(b.ctx, created, 10)
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
}

func TestConcurrentWritersNeverBusy(t *testing.T) {
	t.Parallel()

	// hammer runs writerGoroutines goroutines, each committing
	// writesPerGoroutine transactions on drivers[i % len(drivers)], and
	// returns every error.
	hammer := func(b *bundle, drivers []*Driver) []error {
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for g := range writerGoroutines {
			d := drivers[g%len(drivers)]
			wg.Go(func() {
				for i := range writesPerGoroutine {
					err := write(b.ctx, d, func(tx store.Tx) error {
						_, err := tx.CatalogInsert(b.ctx, b.ids.Next(), fmt.Sprintf("hammer/%d", g%4), "n", fmt.Sprint(i), time.Now())
						return err
					})
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("goroutine %d write %d: %w", g, i, err))
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return errs
	}
	check := func(b *bundle, errs []error) {
		b.t.Helper()
		for _, err := range errs {
			b.t.Error(err)
		}
		var n int
		if err := b.drv.reader.QueryRowContext(b.ctx, `SELECT count(*) FROM catalog`).Scan(&n); err != nil {
			b.t.Fatalf("count catalog: %v", err)
		}
		if want := writerGoroutines * writesPerGoroutine; n != want {
			b.t.Fatalf("catalog has %d rows, want %d", n, want)
		}
	}

	t.Run("OneDriver", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		check(b, hammer(b, []*Driver{b.drv}))
	})

	t.Run("SeveralDriversOnOneFile", func(t *testing.T) {
		t.Parallel()
		// Separate drivers have separate writer connections, like separate
		// processes: BEGIN IMMEDIATE plus busy_timeout must absorb the
		// contention.
		b := setup(t)
		drivers := []*Driver{b.drv}
		for len(drivers) < processDrivers {
			drivers = append(drivers, b.open())
		}
		check(b, hammer(b, drivers))
	})
}

func TestReadDoesNotSeeOrWaitForOpenWrite(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tx, err := b.drv.Begin(b.ctx)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	defer func() { _ = tx.Rollback(b.ctx) }()
	if _, err := tx.CatalogInsert(b.ctx, b.ids.Next(), "open/write", "n", "c", time.Now()); err != nil {
		t.Fatalf("CatalogInsert: %v", err)
	}
	// Far shorter than DefaultBusyTimeout: a Read that waited for the lock
	// would hit this deadline instead of returning ErrNotFound.
	ctx, cancel := context.WithTimeout(b.ctx, DefaultBusyTimeout/4)
	defer cancel()
	err = b.drv.Read(ctx, func(q store.Querier) error {
		_, err := q.CatalogGet(ctx, "open/write", 0)
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Read during an open write = %v, want ErrNotFound", err)
	}
	// The read pool refuses writes outright.
	err = b.drv.Read(b.ctx, func(q store.Querier) error {
		_, err := q.(*queries).tx.ExecContext(b.ctx, `DELETE FROM catalog`)
		return err
	})
	if err == nil {
		t.Fatalf("a write through Driver.Read succeeded, want a query_only error")
	}
}

func TestMemory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	open := func() *Driver {
		d, err := Open(ctx, MemoryPath)
		if err != nil {
			t.Fatalf("Open(%s): %v", MemoryPath, err)
		}
		t.Cleanup(func() { _ = d.Close() })
		if err := d.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return d
	}
	d1, d2 := open(), open()

	b := &bundle{t: t, ctx: ctx, ids: ids.New(-1)}
	b.insertCatalog(d1, "only/in/d1")
	// Both pools of d1 see the row; d2 is a different database.
	for name, d := range map[string]*Driver{"d1": d1, "d2": d2} {
		err := d.Read(ctx, func(q store.Querier) error {
			_, err := q.CatalogGet(ctx, "only/in/d1", 0)
			return err
		})
		if name == "d1" && err != nil {
			t.Fatalf("Read on the writing driver: %v", err)
		}
		if name == "d2" && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Read on another %s driver = %v, want ErrNotFound (databases must be private)", MemoryPath, err)
		}
	}
	dir := d1.tempDir
	if err := d1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left %s behind (stat: %v)", dir, err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	if _, err := Open(t.Context(), ""); err == nil {
		t.Errorf("Open(\"\") succeeded, want an error")
	}
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")
	_, err := Open(t.Context(), missing)
	if err == nil || !strings.Contains(err.Error(), "directory exists") {
		t.Errorf("Open(%s) = %v, want an error that points at the directory", missing, err)
	}
}

func TestPathsNeedingEscapes(t *testing.T) {
	t.Parallel()
	// ?, # and % mean something in a file: URI; they must reach the
	// filesystem literally.
	dir := t.TempDir()
	path := filepath.Join(dir, "odd?name#with%25.db")
	b := &bundle{t: t, ctx: t.Context(), path: path, ids: ids.New(-1)}
	d := b.open()
	if err := d.Migrate(b.ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	b.insertCatalog(d, "x")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not at the literal path: %v", err)
	}
}

func TestSavepointNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tx, err := b.drv.Begin(b.ctx)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	defer func() { _ = tx.Rollback(b.ctx) }()
	for _, bad := range []string{"", "Upper", "semi;colon", `quo"te`, "sp ace"} {
		if err := tx.Savepoint(b.ctx, bad); err == nil {
			t.Errorf("Savepoint(%q) succeeded, want a name error", bad)
		}
	}
	// Names may start with a digit.
	if err := tx.Savepoint(b.ctx, "0_caller"); err != nil {
		t.Fatalf("Savepoint(0_caller): %v", err)
	}
	if err := tx.Release(b.ctx, "0_caller"); err != nil {
		t.Fatalf("Release(0_caller): %v", err)
	}
}

func TestDuplicateInsertIsConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := store.OutboxMsg{ID: b.ids.Next(), EventID: 1, Subject: "s", MsgID: "m", Payload: []byte("p")}
	insert := func() error {
		return write(b.ctx, b.drv, func(tx store.Tx) error { return tx.OutboxInsert(b.ctx, m) })
	}
	if err := insert(); err != nil {
		t.Fatalf("OutboxInsert: %v", err)
	}
	if err := insert(); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second OutboxInsert with the same id = %v, want ErrConflict", err)
	}
}

// BenchmarkCommandLifecycle measures the hot write path: one transaction
// per insert (event, command, outbox), claim and finish.
func BenchmarkCommandLifecycle(b *testing.B) {
	ctx, now, gen := b.Context(), time.Now(), ids.New(-1)
	d, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if err := d.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		id := gen.Next()
		err := write(ctx, d, func(tx store.Tx) error {
			if err := tx.EventInsert(ctx, store.Event{EventID: id, ExecutionID: 1, EventType: api.EvCommandIssued, CreatedAt: now}); err != nil {
				return err
			}
			if err := tx.CommandInsert(ctx, store.Command{EventID: id, ExecutionID: 1, CommandID: "c", Step: "s", Tool: []byte(`{"kind":"shell"}`), CreatedAt: now}); err != nil {
				return err
			}
			return tx.OutboxInsert(ctx, store.OutboxMsg{ID: id, EventID: id, Subject: "s", MsgID: "m", Payload: []byte("{}"), CreatedAt: now})
		})
		if err != nil {
			b.Fatal(err)
		}
		err = write(ctx, d, func(tx store.Tx) error {
			c, err := tx.CommandClaim(ctx, store.ClaimParams{EventID: id, WorkerID: "w", Now: now, LeaseTTL: time.Minute})
			if err != nil {
				return err
			}
			_, err = tx.CommandFinish(ctx, store.FinishParams{EventID: id, WorkerID: "w", Attempt: c.Attempt, Status: api.CmdCompleted, Now: now})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// go test -bench Hot ./internal/store/sqlitedriver/
func BenchmarkHot(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Driver {
		d, err := Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = d.Close() })
		if err := d.Migrate(b.Context()); err != nil {
			b.Fatal(err)
		}
		return d
	})
}

// TestMigrateUpgradeKeepsQueries upgrades a database holding a query written
// under migration 5: it reads back as the SQL query it was, with empty
// metric-query fields.
func TestMigrateUpgradeKeepsQueries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d, err := Open(ctx, filepath.Join(t.TempDir(), "millrace.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	migs, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migs {
		if m.version <= 5 {
			if err := d.apply(ctx, m); err != nil {
				t.Fatalf("apply %s: %v", m.name, err)
			}
		}
	}
	if _, err := d.writer.ExecContext(ctx, `INSERT INTO queries (query_uuid, project_id, sql, status, columns, created_at, updated_at)
		VALUES ('q-1', 7, 'SELECT 1', 'ready', '[ {"name":"x"} ]', 1, 1)`); err != nil {
		t.Fatalf("insert a version-5 query: %v", err)
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from version 5: %v", err)
	}
	err = d.Read(ctx, func(q store.Querier) error {
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
