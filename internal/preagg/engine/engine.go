// Package engine is the DuckDB side of pre-aggregates, shared by the
// pre-aggregate worker and the API server's in-process path: it builds a
// materialization (warehouse rows -> Parquet objects in storage) and serves
// metric queries from one (SQL over the Parquet in a shared, memory-bounded
// DuckDB, with the objects cached on local disk).
//
// Serving uses one DuckDB for the process, bounded by Config.MemoryLimit,
// with a dedicated connection per query: the build's files are registered
// as a TEMP VIEW named bus.PreAggView on that connection only, so queries
// over different builds run side by side. Each build gets its own
// in-memory DuckDB with the same memory limit (spilling to a temporary
// directory), which it closes when done.
package engine

import (
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/preagg/storage"
)

// ErrObjectMissing wraps storage.ErrNotFound when a served build's object
// is gone: the caller reports a MATERIALIZATION_MISSING miss and falls
// back to the warehouse.
var ErrObjectMissing = errors.New("a materialization object is missing")

// ErrTooManyRows: the build's query returned more rows than its max_rows.
// The build fails and writes nothing; the previous build keeps serving.
var ErrTooManyRows = errors.New("the build has too many rows")

// Defaults for a zero Config.
const (
	DefaultMemoryLimit = "1GB"
	DefaultThreads     = 2
	DefaultCacheBytes  = 2 << 30
)

// Config bounds the engine.
type Config struct {
	MemoryLimit   string // DuckDB memory_limit, e.g. "1GB"
	Threads       int
	CacheDir      string // local copies of objects; "" is a temporary directory removed by Close
	CacheMaxBytes int64  // the cache evicts its least recently used files above this
	Logger        *slog.Logger
}

// Engine builds and serves pre-aggregates. It is safe for concurrent use.
type Engine struct {
	cfg      Config
	store    storage.Store
	local    storage.Local // store, when its objects are local files (no cache needed)
	cache    *cache
	dir      string // CacheDir
	ownDir   bool   // dir is ours to remove on Close
	spillDir string // the serving DuckDB's temp_directory
	buildDir string // per-build working directories
	log      *slog.Logger
	db       *sql.DB // serving
}

func (c *Config) defaults() {
	if c.MemoryLimit == "" {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.Threads <= 0 {
		c.Threads = DefaultThreads
	}
	if c.CacheMaxBytes <= 0 {
		c.CacheMaxBytes = DefaultCacheBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// New opens the engine over store. One engine per CacheDir: two engines
// sharing one would evict each other's files.
func New(cfg Config, store storage.Store) (*Engine, error) {
	cfg.defaults()
	e := &Engine{cfg: cfg, store: store, log: cfg.Logger, dir: cfg.CacheDir}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "millrace-preagg-cache-*")
		if err != nil {
			return nil, err
		}
		e.dir, e.ownDir = d, true
	}
	e.spillDir = filepath.Join(e.dir, "spill")
	e.buildDir = filepath.Join(e.dir, "builds")
	for _, d := range []string{e.spillDir, e.buildDir} {
		// Whatever a previous process left there is garbage now.
		os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o750); err != nil {
			e.cleanup()
			return nil, err
		}
	}
	if l, ok := store.(storage.Local); ok {
		e.local = l
	} else {
		c, err := openCache(filepath.Join(e.dir, "objects"), cfg.CacheMaxBytes, store)
		if err != nil {
			e.cleanup()
			return nil, err
		}
		e.cache = c
	}
	db, err := openServing(cfg, e.spillDir)
	if err != nil {
		e.cleanup()
		return nil, err
	}
	e.db = db
	return e, nil
}

// Close releases DuckDB (and the cache directory when it was temporary).
func (e *Engine) Close() error {
	var err error
	if e.db != nil {
		err = e.db.Close()
	}
	e.cleanup()
	return err
}

func (e *Engine) cleanup() {
	if e.ownDir {
		os.RemoveAll(e.dir)
	}
}

// Metrics.
var (
	mQueryLatency = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "millrace_pre_aggregate_duckdb_query_latency_seconds",
		Help:    "Time to serve a metric query from a pre-aggregate in DuckDB (fetching uncached objects included), by outcome: ok, error, missing, canceled.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"outcome"})
	mBuildDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "millrace_pre_aggregate_build_duration_seconds",
		Help:    "Time to build a pre-aggregate (warehouse query, Parquet, upload), by outcome: ok, error, too_many_rows, canceled.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 12),
	}, []string{"outcome"})
	mBuildRows  = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_pre_aggregate_build_rows_total", Help: "Rows written by successful pre-aggregate builds."})
	mBuildBytes = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_pre_aggregate_build_bytes_total", Help: "Parquet bytes written by successful pre-aggregate builds."})
	mCacheBytes = promauto.NewGauge(prometheus.GaugeOpts{Name: "millrace_pre_aggregate_cache_bytes", Help: "Bytes of materialization files in the local cache."})
	mCacheGets  = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_pre_aggregate_cache_requests_total", Help: "Materialization files asked of the local cache, by result: hit or fetch."}, []string{"result"})
	mCacheEvict = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_pre_aggregate_cache_evictions_total", Help: "Files the local materialization cache evicted."})
)
