//go:build !cgo

package warehouse

import (
	"context"
	"errors"
)

// DuckDB is a C++ library: a binary built with CGO_ENABLED=0 has no DuckDB,
// and says so rather than failing to build.
func openDuckDB(context.Context, Conn) (Driver, error) {
	return nil, errors.New("this binary was built without cgo (CGO_ENABLED=0), so it cannot query DuckDB; " +
		"run the query on a worker built with cgo enabled")
}
