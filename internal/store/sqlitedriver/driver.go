// Package sqlitedriver is the SQLite implementation of store.Driver, built on
// modernc.org/sqlite (pure Go, no cgo) through database/sql.
//
// SQLite allows one writer at a time, so the driver is shaped around that:
//
//   - The database runs in WAL mode, so readers never block the writer and
//     the writer never blocks readers.
//   - Writes go through a pool of exactly one connection whose transactions
//     start with BEGIN IMMEDIATE. Writers in this process queue for that
//     connection inside database/sql instead of failing with SQLITE_BUSY, and
//     the write lock is taken up front, so a transaction never has to upgrade
//     a read lock (the upgrade is what fails without waiting in WAL mode).
//     Writers in other processes wait on busy_timeout.
//   - Driver.Read uses a separate pool of query_only connections.
//   - The hot write statements are prepared once on the writer connection and
//     reused by every transaction.
package sqlitedriver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/millrace/millrace/internal/store"
)

// DriverName is what Driver.Name reports.
const DriverName = "sqlite"

// MemoryPath is the path Open accepts for a private, throw-away database.
const MemoryPath = ":memory:"

const (
	// DefaultBusyTimeout is how long a connection waits for a lock held by
	// another process (or a WAL checkpoint) before reporting SQLITE_BUSY.
	DefaultBusyTimeout = 10 * time.Second
	// DefaultReadConns caps the reader pool. Readers in WAL mode run in
	// parallel; more connections than cores buys nothing.
	DefaultReadConns = 8
)

// sqlDriverName is the name modernc.org/sqlite registers with database/sql.
const sqlDriverName = "sqlite"

// Driver is a store.Driver backed by one SQLite database file.
type Driver struct {
	path    string // as given to Open
	tempDir string // backing directory of a MemoryPath database, removed by Close
	writer  *sql.DB
	reader  *sql.DB

	prepMu sync.Mutex
	// prepared maps query text to a statement prepared on the writer; nil
	// until the schema exists (see prepare).
	prepared atomic.Pointer[map[string]*sql.Stmt]
	// readPrepared is the same for the readers.
	readPrepared atomic.Pointer[map[string]*sql.Stmt]

	closeOnce sync.Once
	closeErr  error
}

var _ store.Driver = (*Driver)(nil)

// Open opens (creating if needed) the database at path and verifies it can
// run in WAL mode. It does not migrate; call Migrate.
//
// path MemoryPath (":memory:") gives a private database that Close deletes.
// It lives in a temporary file rather than in SQLite's in-memory modes:
// those cannot use WAL, so a reader would wait for (with a shared cache:
// deadlock behind) any open write transaction, breaking Driver.Read.
func Open(ctx context.Context, path string) (*Driver, error) {
	if path == "" {
		return nil, errors.New("sqlitedriver: empty database path; pass a file path, or " + MemoryPath + " for a database in memory")
	}
	d := &Driver{path: path}
	file := path
	if path == MemoryPath {
		dir, err := os.MkdirTemp("", "millrace-sqlite-")
		if err != nil {
			return nil, fmt.Errorf("sqlitedriver: create temporary directory for %s: %w (check TMPDIR)", MemoryPath, err)
		}
		d.tempDir = dir
		file = filepath.Join(dir, "millrace.db")
	}
	if err := d.open(ctx, file); err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Driver) open(ctx context.Context, file string) error {
	busy := fmt.Sprintf("_pragma=busy_timeout(%d)", DefaultBusyTimeout.Milliseconds())
	var err error
	d.writer, err = sql.Open(sqlDriverName, dsn(file,
		"_txlock=immediate", busy,
		"_pragma=journal_mode(WAL)",
		// NORMAL is durable in WAL mode except for the last transactions
		// before a power loss; it avoids an fsync per commit.
		"_pragma=synchronous(NORMAL)",
		"_pragma=foreign_keys(1)",
	))
	if err != nil {
		return fmt.Errorf("sqlitedriver: open %s: %w", d.path, err)
	}
	// One connection: writers queue here rather than contend for the lock.
	// It never expires, which keeps its prepared statements alive.
	d.writer.SetMaxOpenConns(1)
	d.writer.SetMaxIdleConns(1)
	d.writer.SetConnMaxLifetime(0)
	d.writer.SetConnMaxIdleTime(0)

	// Connect the writer first: its connection switches the file to WAL,
	// which the query_only readers cannot do.
	var mode string
	if err := d.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlitedriver: open %s: %w (check that the directory exists and is writable)", d.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlitedriver: open %s: journal_mode is %q, want wal; put the database on a local filesystem", d.path, mode)
	}

	d.reader, err = sql.Open(sqlDriverName, dsn(file, busy, "_pragma=query_only(1)"))
	if err != nil {
		return fmt.Errorf("sqlitedriver: open %s for reading: %w", d.path, err)
	}
	d.reader.SetMaxOpenConns(DefaultReadConns)
	d.reader.SetMaxIdleConns(DefaultReadConns)
	if err := d.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlitedriver: open %s for reading: %w", d.path, err)
	}
	// Best effort: an already migrated database gets its statements now,
	// a new one after Migrate.
	d.prepare(ctx)
	return nil
}

// dsn builds a modernc.org/sqlite URI for file with the given parameters.
func dsn(file string, params ...string) string {
	// A file: URI treats %, ? and # specially; escape them in the path.
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.Clean(file))
	return "file:" + p + "?" + strings.Join(params, "&")
}

// ParseURL extracts the database path from a sqlite URL: sqlite:PATH,
// sqlite://PATH, sqlite:///abs/path, sqlite::memory: or sqlite://:memory:.
// Query parameters (sqlite:file.db?...) are accepted and ignored: the driver
// sets its own pragmas. ok is false for other schemes or an empty path.
func ParseURL(url string) (path string, ok bool) {
	const scheme = "sqlite:"
	if len(url) < len(scheme) || !strings.EqualFold(url[:len(scheme)], scheme) {
		return "", false
	}
	rest := strings.TrimPrefix(url[len(scheme):], "//")
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i]
	}
	if rest == "" {
		return "", false
	}
	return rest, true
}

// Name implements store.Driver.
func (d *Driver) Name() string { return DriverName }

// Path returns the path the driver was opened with.
func (d *Driver) Path() string { return d.path }

// Begin implements store.Driver. The transaction holds the database write
// lock until Commit or Rollback; other writers wait for it.
func (d *Driver) Begin(ctx context.Context) (store.Tx, error) {
	t, err := d.writer.BeginTx(ctx, nil) // BEGIN IMMEDIATE via _txlock
	if err != nil {
		return nil, fmt.Errorf("sqlitedriver: begin: %w", err)
	}
	return &tx{queries: queries{tx: t, prepared: d.prepared.Load()}}, nil
}

// Read implements store.Driver. fn sees one consistent snapshot of committed
// data and never waits for writers.
func (d *Driver) Read(ctx context.Context, fn func(q store.Querier) error) error {
	t, err := d.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("sqlitedriver: begin read: %w", err)
	}
	defer func() { _ = t.Rollback() }() // nothing to commit
	return fn(&queries{tx: t, prepared: d.readPrepared.Load()})
}

// Close implements store.Driver. It is safe to call more than once.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		for _, p := range []*atomic.Pointer[map[string]*sql.Stmt]{&d.prepared, &d.readPrepared} {
			m := p.Swap(nil)
			if m == nil {
				continue
			}
			for _, s := range *m {
				errs = append(errs, s.Close())
			}
		}
		if d.reader != nil {
			errs = append(errs, d.reader.Close())
		}
		if d.writer != nil {
			errs = append(errs, d.writer.Close())
		}
		if d.tempDir != "" {
			errs = append(errs, os.RemoveAll(d.tempDir))
		}
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("sqlitedriver: close %s: %w", d.path, err)
		}
	})
	return d.closeErr
}

// prepare prepares hotQueries on the writer and readHotQueries for the
// readers, each set all or nothing. It fails quietly while the schema does
// not exist yet; transactions then run the same SQL unprepared.
func (d *Driver) prepare(ctx context.Context) {
	d.prepMu.Lock()
	defer d.prepMu.Unlock()
	if d.prepared.Load() == nil {
		if m := prepareAll(ctx, d.writer, hotQueries); m != nil {
			d.prepared.Store(&m)
		}
	}
	if d.readPrepared.Load() == nil {
		if m := prepareAll(ctx, d.reader, readHotQueries); m != nil {
			d.readPrepared.Store(&m)
		}
	}
}

func prepareAll(ctx context.Context, db *sql.DB, queries []string) map[string]*sql.Stmt {
	m := make(map[string]*sql.Stmt, len(queries))
	for _, q := range queries {
		s, err := db.PrepareContext(ctx, q)
		if err != nil {
			for _, s := range m {
				_ = s.Close()
			}
			return nil
		}
		m[q] = s
	}
	return m
}
