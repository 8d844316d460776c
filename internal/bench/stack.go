package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
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
	stop              func()
}

func startStack(ctx context.Context, opts *Options) (_ *stack, err error) {
	var cleanup []func() // run in reverse on failure or stop
	undo := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	st := &stack{}
	var scfg config.Server
	config.ServerSet(&scfg) // defaults
	switch {
	case strings.HasPrefix(opts.Store, "postgres://"), strings.HasPrefix(opts.Store, "postgresql://"):
		st.kind = "postgres"
		st.schema = "bench_" + randomHex(8)
		if scfg.DatabaseURL, err = withSearchPath(opts.Store, st.schema); err != nil {
			return nil, err
		}
		if !opts.Keep {
			// The server's driver creates the schema on open.
			cleanup = append(cleanup, func() { dropSchema(opts.Store, st.schema, opts) })
		}
	case strings.HasPrefix(opts.Store, "sqlite:"):
		st.kind = "sqlite"
		scfg.DatabaseURL = opts.Store
	default:
		return nil, fmt.Errorf("--store %q: use postgres://user@host:5432/db (a fresh schema per run) or sqlite:PATH", opts.Store)
	}

	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1})
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS: %w", err)
	}
	cleanup = append(cleanup, emb.Shutdown)
	opts.NATS.URL, opts.NATS.User, opts.NATS.Password = emb.URL(), "", ""

	results, err := os.MkdirTemp("", "millrace-bench-results-*")
	if err != nil {
		return nil, fmt.Errorf("create a results directory: %w", err)
	}
	cleanup = append(cleanup, func() { _ = os.RemoveAll(results) })
	scfg.NATS = opts.NATS
	scfg.Addr = "127.0.0.1:0"
	scfg.Query.ResultsDir = results
	scfg.SecretKey = randomHex(32) // credentials are unused; this only silences the warning
	srv, err := server.New(ctx, scfg, opts.Log)
	if err != nil {
		return nil, err
	}
	// Workers stop before the server, so that their last reports land.
	srvCtx, stopServer := context.WithCancel(context.Background())
	srvDone := make(chan struct{})
	go func() { defer close(srvDone); _ = srv.Run(srvCtx) }()
	cleanup = append(cleanup, func() { stopServer(); <-srvDone })

	var wcfg config.Worker
	config.WorkerSet(&wcfg) // defaults
	wcfg.NATS, wcfg.ServerURL = opts.NATS, srv.URL()
	wcfg.Concurrency, wcfg.ShutdownGrace = opts.WorkerConcurrency, workerGrace
	wctx, stopWorkers := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	cleanup = append(cleanup, func() { stopWorkers(); workers.Wait() })
	for i := range opts.Workers {
		c := wcfg
		c.WorkerID = fmt.Sprintf("bench-%d", i)
		w, err := commands.New(ctx, c, opts.Log)
		if err != nil {
			return nil, err
		}
		workers.Go(func() { _ = w.Run(wctx) })
	}
	st.url, st.stop = srv.URL(), undo
	return st, nil
}

// withSearchPath points a postgres:// URL at schema.
func withSearchPath(dbURL, schema string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", fmt.Errorf("--store: parse %q: %w (expected e.g. postgres://user:password@host:5432/db?sslmode=disable)", dbURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func dropSchema(dbURL, schema string, opts *Options) {
	ctx, cancel := context.WithTimeout(context.Background(), schemaTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err == nil {
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	}
	if err != nil {
		opts.Log.Warn("could not drop the benchmark schema; drop it by hand", "schema", schema, "err", err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
