package pgdriver_test

import (
	"testing"

	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/storetest"
)

// go test -run '^$' -bench Many -benchmem ./internal/store/pgdriver/
func BenchmarkMany(b *testing.B) {
	storetest.BenchMany(b, func(b *testing.B) store.Driver { return pgtest.Open(b) })
}
