//go:build cgo

package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/preagg/storage"
	"github.com/millrace/millrace/internal/warehouse"
)

// fetchParallel bounds the objects of one query fetched at once.
const fetchParallel = 4

// openDuckDB opens a private in-memory DuckDB bounded by cfg, spilling to
// spill. The settings are global, so every pooled connection has them.
func openDuckDB(cfg Config, spill string) (*sql.DB, error) {
	connector, err := duckdb.NewConnector("", nil)
	if err != nil {
		return nil, fmt.Errorf("engine: opening duckdb: %w", err)
	}
	db := sql.OpenDB(connector)
	for _, s := range []string{
		"SET GLOBAL memory_limit = " + sqlString(cfg.MemoryLimit),
		fmt.Sprintf("SET GLOBAL threads = %d", cfg.Threads),
		"SET GLOBAL temp_directory = " + sqlString(spill),
		// Nothing is ever downloaded: Parquet is built in.
		"SET GLOBAL autoinstall_known_extensions = false",
		// Time arithmetic on TIMESTAMPTZ (date_trunc) in UTC whatever the
		// machine's zone, as the semantic layer compiles it.
		"SET GLOBAL TimeZone = 'UTC'",
		// Keep Parquet metadata between queries: a build's objects are
		// immutable, and re-reading their footers was a third of a small
		// query's time.
		"SET GLOBAL enable_object_cache = true",
	} {
		if _, err := db.Exec(s); err != nil {
			db.Close()
			return nil, fmt.Errorf("engine: %s: %w", s, err)
		}
	}
	return db, nil
}

func openServing(cfg Config, spill string) (*sql.DB, error) { return openDuckDB(cfg, spill) }

// sqlString is a SQL string literal.
func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// quoteIdent is a SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Serve runs plan's SQL over its objects and streams the result, like a
// warehouse.Driver's Query, with values converted exactly as the DuckDB
// warehouse converts them. A missing object returns an error wrapping
// ErrObjectMissing and storage.ErrNotFound. Cancelling ctx interrupts
// DuckDB.
func (e *Engine) Serve(ctx context.Context, plan api.ServePlan, onColumns func([]warehouse.Column) error, onRow func([]any) error) (err error) {
	start := time.Now()
	defer func() { mQueryLatency.WithLabelValues(outcome(ctx, err)).Observe(time.Since(start).Seconds()) }()
	if len(plan.Objects) == 0 {
		return fmt.Errorf("engine: build %s has no objects to serve from", plan.BuildUUID)
	}
	paths, release, err := e.files(ctx, plan)
	if err != nil {
		return err
	}
	defer release()

	conn, err := e.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	defer conn.Close()
	query := withView(plan.SQL, paths)
	var cbErr error
	wrap := func(f func() error) error {
		if err := f(); err != nil {
			cbErr = err
			return err
		}
		return nil
	}
	err = warehouse.QueryDuckDB(ctx, conn, "pre-aggregate build "+plan.BuildUUID, query,
		func(c []warehouse.Column) error { return wrap(func() error { return onColumns(c) }) },
		func(r []any) error { return wrap(func() error { return onRow(r) }) })
	if err != nil && cbErr == nil {
		return e.serveFailed(ctx, plan, paths, err)
	}
	return err
}

// withView binds the view bus.PreAggView to the build's files for this one
// query, as a common table expression: no statement before or after it and
// no state left on the pooled connection (a CREATE and DROP VIEW per query
// took as long as a small query itself). union_by_name: partitions kept from
// older builds may have a column sized differently (BIGINT there,
// DECIMAL(38,0) here); DuckDB unifies them instead of failing.
func withView(sql string, paths []string) string {
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = sqlString(p)
	}
	cte := quoteIdent(bus.PreAggView) + " AS (SELECT * FROM read_parquet([" + strings.Join(quoted, ", ") + "], union_by_name = true))"
	trimmed := strings.TrimSpace(sql)
	if len(trimmed) > 5 && strings.EqualFold(trimmed[:5], "WITH ") {
		return "WITH " + cte + ", " + trimmed[5:]
	}
	return "WITH " + cte + "\n" + trimmed
}

// serveFailed names a file that vanished under DuckDB (a Dir object
// deleted, a cache file removed) as a missing object.
func (e *Engine) serveFailed(ctx context.Context, plan api.ServePlan, paths []string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	for i, p := range paths {
		if _, serr := os.Stat(p); errors.Is(serr, fs.ErrNotExist) {
			return missing(plan, plan.Objects[i].Object, err)
		}
	}
	return err
}

func missing(plan api.ServePlan, key string, cause error) error {
	return fmt.Errorf("engine: build %s: object %s: %w: %w (%v)", plan.BuildUUID, key, ErrObjectMissing, storage.ErrNotFound, cause)
}

// files are the local paths of plan's objects, pinned in the cache until
// release.
func (e *Engine) files(ctx context.Context, plan api.ServePlan) (paths []string, release func(), err error) {
	paths = make([]string, len(plan.Objects))
	if e.local != nil {
		for i, o := range plan.Objects {
			p, err := e.local.Path(o.Object)
			if errors.Is(err, storage.ErrNotFound) {
				return nil, nil, missing(plan, o.Object, err)
			} else if err != nil {
				return nil, nil, fmt.Errorf("engine: %w", err)
			}
			paths[i] = p
		}
		return paths, func() {}, nil
	}
	var mu sync.Mutex
	var releases []func()
	release = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range releases {
			r()
		}
		releases = nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchParallel)
	for i, o := range plan.Objects {
		g.Go(func() error {
			p, rel, err := e.cache.acquire(gctx, o.Object)
			if errors.Is(err, storage.ErrNotFound) {
				return missing(plan, o.Object, err)
			} else if err != nil {
				return fmt.Errorf("engine: fetching %s: %w", o.Object, err)
			}
			mu.Lock()
			releases = append(releases, rel)
			mu.Unlock()
			paths[i] = p
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		release()
		return nil, nil, err
	}
	return paths, release, nil
}

func outcome(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrObjectMissing):
		return "missing"
	case errors.Is(err, ErrTooManyRows):
		return "too_many_rows"
	case ctx.Err() != nil:
		return "canceled"
	}
	return "error"
}
