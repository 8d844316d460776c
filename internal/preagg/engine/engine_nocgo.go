//go:build !cgo

package engine

import (
	"context"
	"database/sql"
	"errors"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/warehouse"
)

// DuckDB is a C++ library: a binary built with CGO_ENABLED=0 cannot build
// or serve pre-aggregates, and says so.
var errNoCgo = errors.New("this binary was built without cgo (CGO_ENABLED=0), so it cannot build or serve pre-aggregates (DuckDB); " +
	"run a pre-aggregate worker built with cgo enabled")

func openServing(Config, string) (*sql.DB, error) { return nil, errNoCgo }

// Build fails: no DuckDB in this binary.
func (e *Engine) Build(context.Context, api.ClaimedBuild) (api.BuildComplete, error) {
	return api.BuildComplete{}, errNoCgo
}

// Serve fails: no DuckDB in this binary.
func (e *Engine) Serve(context.Context, api.ServePlan, func([]warehouse.Column) error, func([]any) error) error {
	return errNoCgo
}
