//go:build !cgo

package warehouse

import (
	"strings"
	"testing"
)

func TestDuckDBWithoutCgo(t *testing.T) {
	t.Parallel()
	_, err := Open(t.Context(), Conn{Type: TypeDuckDB, URL: DuckDBMemory})
	if err == nil || !strings.Contains(err.Error(), "built without cgo") {
		t.Fatalf("Open without cgo: %v", err)
	}
}
