// Package sqlitetest gives tests a fresh, migrated SQLite database of their
// own, the SQLite side of pgtest. It lives apart from sqlitedriver so
// production code never imports testing.
package sqlitetest

import (
	"path/filepath"
	"testing"

	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
)

// Open returns a migrated driver over a file in the test's temporary
// directory, closed when the test ends.
func Open(t testing.TB) *sqlitedriver.Driver {
	t.Helper()
	d, err := sqlitedriver.Open(t.Context(), filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatalf("sqlitetest: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	if err := d.Migrate(t.Context()); err != nil {
		t.Fatalf("sqlitetest: migrate: %v", err)
	}
	return d
}

// Store returns a store.Store over Open's driver, closed when the test ends.
func Store(t testing.TB) *store.Store {
	t.Helper()
	st := store.New(Open(t), store.Options{})
	t.Cleanup(func() { _ = st.Close() })
	return st
}
