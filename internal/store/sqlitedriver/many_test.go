package sqlitedriver

import (
	"path/filepath"
	"testing"

	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/storetest"
)

// go test -run '^$' -bench Many -benchmem ./internal/store/sqlitedriver/
func BenchmarkMany(b *testing.B) {
	storetest.BenchMany(b, func(b *testing.B) store.Driver {
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
