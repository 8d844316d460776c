// Package engine is the DuckDB side of pre-aggregates, shared by the
// pre-aggregate worker and the API server's in-process path: it builds a
// materialization (warehouse rows -> Parquet objects in storage) and serves
// metric queries from one (SQL over the Parquet in a shared, memory-bounded
// DuckDB, with the objects cached on local disk).
package engine

import (
	"context"
	"errors"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/warehouse"
)

// ErrObjectMissing wraps storage.ErrNotFound when a served build's object
// is gone: the caller reports a MATERIALIZATION_MISSING miss and falls
// back to the warehouse.
var ErrObjectMissing = errors.New("a materialization object is missing")

// Config bounds the engine.
type Config struct {
	MemoryLimit   string // DuckDB memory_limit, e.g. "1GB"
	Threads       int
	CacheDir      string // local copies of objects
	CacheMaxBytes int64
}

// Engine builds and serves pre-aggregates.
type Engine struct {
	cfg   Config
	store storage.Store
}

// New opens the engine over store.
func New(cfg Config, store storage.Store) (*Engine, error) {
	return &Engine{cfg: cfg, store: store}, errors.New("engine: not implemented yet")
}

// Build runs b's plan on the warehouse, writes its rows as Parquet objects
// under b.ObjectPrefix and returns the complete build (b.Keep included).
// It fails, writing nothing the server will see, when the build has more
// than b.MaxRows rows.
func (e *Engine) Build(ctx context.Context, b api.ClaimedBuild) (api.BuildComplete, error) {
	return api.BuildComplete{}, errors.New("engine: not implemented yet")
}

// Serve runs plan's SQL over its objects and streams the result, like a
// warehouse.Driver's Query. A missing object returns an error wrapping
// ErrObjectMissing.
func (e *Engine) Serve(ctx context.Context, plan api.ServePlan, onColumns func([]warehouse.Column) error, onRow func([]any) error) error {
	return errors.New("engine: not implemented yet")
}

// Close releases DuckDB.
func (e *Engine) Close() error { return nil }
