//go:build !cgo

package tools

import "context"

// DuckDB is a C++ library: a binary built with CGO_ENABLED=0 has no DuckDB,
// and says so rather than failing to build.
func duckdbExec(context.Context, string, []duckdbSecret, []duckdbAttachment, []string) (*sqlResult, string, error) {
	return nil, "", &Error{Kind: "duckdb", Message: "this worker was built without cgo (CGO_ENABLED=0), so it cannot run DuckDB; " +
		"run the step on a worker built with cgo enabled"}
}
