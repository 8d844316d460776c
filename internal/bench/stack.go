package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/worker/commands"
)

const (
	// workerGrace is the in-process workers' shutdown grace: by the time
	// they stop, every benchmark command has ended.
	workerGrace = 5 * time.Second
	// schemaTimeout bounds dropping the benchmark schema.
	schemaTimeout = 30 * time.Second
)

// stack is a self-contained Millrace: embedded NATS, a server and workers,
// wired as `millrace dev` wires them.
type stack struct {
	url, kind, schema string
	// urls are the servers' URLs (url is the first); dbURL is the store
	// they share (with the run's search_path on PostgreSQL).
	urls  []string
	dbURL string
	// token is an admin token made in the store for the benchmark's own
	// requests ("" with auth off).
	token     string
	stop      func() // runs cleanup in reverse
	cleanup   []func()
	workerCtx context.Context
	workers   sync.WaitGroup
	// startWorkers starts the in-process workers (startStack has already
	// called it unless the run drains).
	startWorkers func(context.Context) error
}

func startStack(ctx context.Context, opts *Options) (*stack, error) {
	var adjust func(*config.Server)
	if opts.Auth != "" {
		adjust = func(c *config.Server) { c.Auth.Mode = opts.Auth }
	}
	st, wcfg, err := startServerStack(ctx, opts.Store, opts.Keep, opts.Servers, &opts.NATS, opts.Log, adjust)
	if err != nil {
		return nil, err
	}
	wcfg.Concurrency = opts.WorkerConcurrency
	if opts.WorkerAck != "" {
		wcfg.AckOn = opts.WorkerAck
	}
	st.startWorkers = func(ctx context.Context) error {
		for i := range opts.Workers {
			c := wcfg
			c.WorkerID = fmt.Sprintf("bench-%d", i)
			// With several servers the workers take turns: worker i
			// reports to server i mod servers.
			c.ServerURL = st.urls[i%len(st.urls)]
			if err := st.goWorker(ctx, func(ctx context.Context) (runner, error) { return commands.New(ctx, c, opts.Log) }); err != nil {
				return err
			}
		}
		return nil
	}
	if !opts.Drain {
		if err := st.startWorkers(ctx); err != nil {
			st.stop()
			return nil, err
		}
	}
	return st, nil
}

// runner is a started worker runtime.
type runner interface{ Run(context.Context) error }

// startServerStack starts embedded NATS (its URL is written into nats) and
// servers (at least one) on store, configured by adjust, each with its own
// relay and reapers, and returns the settings its workers start from
// (pointed at the first server). Workers added with goWorker stop before the server,
// so that their last reports land.
func startServerStack(ctx context.Context, store string, keep bool, servers int, nats *config.NATS, log *slog.Logger, adjust func(*config.Server)) (_ *stack, _ config.Worker, err error) {
	st := &stack{}
	st.stop = func() {
		for i := len(st.cleanup) - 1; i >= 0; i-- {
			st.cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			st.stop()
		}
	}()
	var scfg config.Server
	config.ServerSet(&scfg) // defaults
	switch {
	case strings.HasPrefix(store, "postgres://"), strings.HasPrefix(store, "postgresql://"):
		st.kind = "postgres"
		st.schema = "bench_" + randomHex(8)
		if scfg.DatabaseURL, err = withSearchPath(store, st.schema); err != nil {
			return nil, config.Worker{}, err
		}
		if !keep {
			// The server's driver creates the schema on open.
			st.cleanup = append(st.cleanup, func() { dropSchema(store, st.schema, log) })
		}
	case strings.HasPrefix(store, "sqlite:"):
		st.kind = "sqlite"
		scfg.DatabaseURL = store
	default:
		return nil, config.Worker{}, fmt.Errorf("--store %q: use postgres://user@host:5432/db (a fresh schema per run) or sqlite:PATH", store)
	}

	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1})
	if err != nil {
		return nil, config.Worker{}, fmt.Errorf("start embedded NATS: %w", err)
	}
	st.cleanup = append(st.cleanup, emb.Shutdown)
	nats.URL, nats.User, nats.Password = emb.URL(), "", ""

	results, err := os.MkdirTemp("", "millrace-bench-results-*")
	if err != nil {
		return nil, config.Worker{}, fmt.Errorf("create a results directory: %w", err)
	}
	st.cleanup = append(st.cleanup, func() { _ = os.RemoveAll(results) })
	scfg.NATS = *nats
	scfg.Addr = "127.0.0.1:0"
	scfg.Query.ResultsDir = results
	scfg.SecretKey = randomHex(32) // the query face seals project connections with it
	if adjust != nil {
		adjust(&scfg)
	}
	// Auth is on, as in production: an admin token for the benchmark's
	// requests and a worker token for the in-process workers.
	var workerToken string
	if scfg.Auth.Mode != config.AuthNone {
		if st.token, workerToken, err = benchTokens(ctx, scfg.DatabaseURL); err != nil {
			return nil, config.Worker{}, err
		}
	}
	st.dbURL = scfg.DatabaseURL
	for range max(servers, 1) {
		srv, err := server.New(ctx, scfg, log)
		if err != nil {
			return nil, config.Worker{}, err
		}
		srvCtx, stopServer := context.WithCancel(context.Background())
		srvDone := make(chan struct{})
		go func() { defer close(srvDone); _ = srv.Run(srvCtx) }()
		st.cleanup = append(st.cleanup, func() { stopServer(); <-srvDone })
		st.urls = append(st.urls, srv.URL())
	}
	wctx, stopWorkers := context.WithCancel(context.Background())
	st.workerCtx = wctx
	st.cleanup = append(st.cleanup, func() { stopWorkers(); st.workers.Wait() })

	var wcfg config.Worker
	config.WorkerSet(&wcfg) // defaults
	wcfg.NATS, wcfg.ServerURL, wcfg.ShutdownGrace, wcfg.Token = *nats, st.urls[0], workerGrace, workerToken
	wcfg.Query, wcfg.PreAgg = scfg.Query, scfg.PreAgg
	st.url = st.urls[0]
	return st, wcfg, nil
}

// goWorker starts a worker runtime that runs until the stack stops.
func (st *stack) goWorker(ctx context.Context, start func(context.Context) (runner, error)) error {
	w, err := start(ctx)
	if err != nil {
		return err
	}
	st.workers.Go(func() { _ = w.Run(st.workerCtx) })
	return nil
}

// withSearchPath points a postgres:// URL at schema.
func withSearchPath(dbURL, schema string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		// url's error quotes the URL, password and all.
		return "", fmt.Errorf("--store %q is not a URL (expected e.g. postgres://user:password@host:5432/db?sslmode=disable)", config.RedactURL(dbURL))
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func dropSchema(dbURL, schema string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), schemaTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err == nil {
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	}
	if err != nil {
		log.Warn("could not drop the benchmark schema; drop it by hand", "schema", schema, "err", err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// benchTokens makes an admin and a worker token in the store at dbURL,
// before the server opens it.
func benchTokens(ctx context.Context, dbURL string) (admin, worker string, err error) {
	drv, err := server.OpenDriver(ctx, dbURL)
	if err != nil {
		return "", "", err
	}
	node := -1
	if alloc, ok := drv.(store.NodeAllocator); ok {
		if node, err = alloc.AllocateNode(ctx); err != nil {
			drv.Close()
			return "", "", err
		}
	}
	st, gen := store.New(drv, store.Options{}), ids.New(node)
	defer st.Close()
	a, err := auth.CreateToken(ctx, st, gen, api.RoleAdmin, "bench-admin", "millrace bench", nil)
	if err != nil {
		return "", "", fmt.Errorf("make the benchmark's admin token: %w", err)
	}
	w, err := auth.CreateToken(ctx, st, gen, api.RoleWorker, "bench-worker", "millrace bench", nil)
	if err != nil {
		return "", "", fmt.Errorf("make the benchmark's worker token: %w", err)
	}
	return a.Secret, w.Secret, nil
}
