package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/worker"
	"github.com/millrace/millrace/internal/worker/commands"
	"github.com/millrace/millrace/internal/worker/preaggs"
	"github.com/millrace/millrace/internal/worker/queries"
)

func serverCmd() *cobra.Command {
	var cfg config.Server
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the API server (event store + NATS publisher + reaper)",
		Long: `Run the Millrace API server. It applies database migrations, checks the
JetStream stream and consumer (creating them if missing), serves the HTTP API
on MILLRACE_ADDR, drains the outbox to NATS, and re-notifies work that was
never claimed or whose lease expired. Run as many as you like against one
database; give each a distinct MILLRACE_NODE_ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cfg.Log, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			srv, err := server.New(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	bindSet(cmd, config.ServerSet(&cfg))
	return cmd
}

func workerCmd() *cobra.Command {
	var cfg config.Worker
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: flow commands (default), warehouse queries (--stream warehouse) or pre-aggregates (--stream pre-aggregate)",
		Long: `Run a Millrace worker. It pulls notifications from the durable consumer
(NATS_CONSUMER), claims each command from the server at SERVER_API_URL, runs
its tool with up to NATS_WORKER_CONCURRENCY commands at once, and reports the
outcome. On SIGTERM it stops fetching, lets running commands finish within
MILLRACE_SHUTDOWN_GRACE_SECONDS, releases the rest, and exits 0.

It acknowledges a notification once the server committed its claim
(MILLRACE_WORKER_ACK=claim, the default): from then on the claim's lease,
renewed by heartbeats, keeps the command, and if the worker dies the server
re-notifies it when the lease expires (MILLRACE_LEASE_SECONDS plus a reaper
pass), so NOETL_WORKER_NATS_MAX_ACK_PENDING caps only notifications not yet
claimed. With MILLRACE_WORKER_ACK=completion it keeps the notification until
the server accepted the report, and max_ack_pending caps the commands
running across the whole pool. Warehouse and pre-aggregate workers always
acknowledge on completion.

It presents MILLRACE_WORKER_TOKEN (a token of role worker: millrace token
create --role worker) with every request, and checks it at start: a token
the server does not accept, or one of another role, stops it at once.

With --stream warehouse it runs warehouse queries instead, from
WAREHOUSE_QUERY_JOBS (consumers worker-warehouse and
worker-warehouse-interactive), for servers started with NATS_ENABLED=true.

With --stream pre-aggregate it builds and serves pre-aggregates, from
PRE_AGGREGATE_QUERY_JOBS: materializations (consumer
worker-pre-aggregate-materialization, at most PRE_AGGREGATE_BUILD_CONCURRENCY
at once) run the pre-aggregate's query on the warehouse and write Parquet to
the object store (a JetStream Object Store bucket, PRE_AGGREGATE_OBJECT_BUCKET,
or PRE_AGGREGATE_DIR with PRE_AGGREGATE_STORAGE=dir); metric queries that
match a pre-aggregate (consumer worker-pre-aggregate) are answered from DuckDB
over it, bounded by PRE_AGGREGATE_DUCKDB_QUERY_MEMORY_LIMIT. A lost object
sends the query back to the warehouse and starts a rebuild. For servers
started with NATS_ENABLED=true (otherwise the server does both itself).`,
		Example: `  millrace worker                                   # flow commands
  millrace worker --stream warehouse                # queries, for servers with NATS_ENABLED=true
  millrace worker --stream pre-aggregate --pre-aggregate-memory-limit 2GB --pre-aggregate-build-concurrency 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cfg.Log, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			// The pool is checked before anything is contacted.
			if cfg.Pool != "" && cfg.Stream != "commands" {
				return fmt.Errorf("MILLRACE_WORKER_POOL (--pool %s) routes flow steps; it applies to --stream commands only, not %s: unset it for this worker", cfg.Pool, cfg.Stream)
			}
			if err := bus.CheckPool(cfg.Pool); err != nil {
				return fmt.Errorf("MILLRACE_WORKER_POOL (--pool) %q: %v; it is the name a playbook step gives as `pool:`", cfg.Pool, err)
			}
			if err := worker.CheckToken(cmd.Context(), cfg.ServerURL, cfg.Token, log); err != nil {
				return err
			}
			var w *worker.Runtime
			switch cfg.Stream {
			case "commands":
				w, err = commands.New(cmd.Context(), cfg, log)
			case "warehouse":
				w, err = queries.New(cmd.Context(), queries.FromConfig(cfg), log)
			case "pre-aggregate":
				w, err = preaggs.New(cmd.Context(), preaggs.FromConfig(cfg), log)
			default:
				return fmt.Errorf("--stream must be commands, warehouse or pre-aggregate, got %q", cfg.Stream)
			}
			if err != nil {
				return err
			}
			if cfg.MetricsAddr != "" {
				ln, err := net.Listen("tcp", cfg.MetricsAddr)
				if err != nil {
					return fmt.Errorf("metrics listener on %s (MILLRACE_WORKER_METRICS_ADDR): %w", cfg.MetricsAddr, err)
				}
				ms := &http.Server{Handler: worker.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
				go func() { _ = ms.Serve(ln) }()
				defer ms.Close()
				log.Info("worker metrics", "addr", ln.Addr().String())
			}
			return w.Run(cmd.Context())
		},
	}
	bindSet(cmd, config.WorkerSet(&cfg))
	return cmd
}

func devCmd() *cobra.Command {
	var cfg config.Dev
	var runFile string
	var once bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process: embedded NATS, SQLite, server and workers",
		Long: `Run Millrace with no setup: an embedded NATS server with JetStream, an
embedded SQLite event store under --data-dir, the API server and in-process
workers. With --run FILE it registers the playbook, executes it, follows it
to the end and prints its result; with --once it then exits (non-zero if the
execution did not complete).

With NATS_ENABLED=true, queries go through NATS as in production, and dev
also runs a warehouse worker and a pre-aggregate worker. Materializations are
kept under DATA_DIR/preaggregates unless PRE_AGGREGATE_DIR says otherwise
(with NATS_ENABLED=true, in the embedded NATS's object store unless
PRE_AGGREGATE_STORAGE=dir).

Authentication is on, as in production: dev keeps an admin token in
DATA_DIR/admin.token (made at the first start, reused while it is valid)
and gives its workers a fresh worker token at each start. Client commands
that find dev through DATA_DIR/dev.json send its admin token; elsewhere use
--token or MILLRACE_TOKEN. MILLRACE_AUTH=none turns authentication off.

Dev mode listens on 127.0.0.1 only (the API on --addr, the embedded NATS on
--nats-port). With NATS_URL or --nats-url set it uses that NATS server
instead of starting an embedded one.`,
		Example: `  millrace dev --run examples/branching.yaml --once
  millrace dev                       # then: millrace register FILE; millrace execute PATH`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd, cfg, runFile, once)
		},
	}
	bindSet(cmd, config.DevSet(&cfg))
	cmd.Flags().StringVar(&runFile, "run", "", "Playbook file to register and execute once the stack is up")
	cmd.Flags().BoolVar(&once, "once", false, "With --run: exit when the execution ends")
	return cmd
}

func runDev(cmd *cobra.Command, cfg config.Dev, runFile string, once bool) error {
	if runFile != "" {
		// An invalid playbook fails here, with its problems, before any
		// part of the stack starts (or the data directory is created).
		if err := validateFile(runFile); err != nil {
			return fmt.Errorf("--run: %w\nnothing was started: fix the playbook (millrace validate %s) and run again", err, runFile)
		}
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	out := cmd.OutOrStdout()
	log, err := newLogger(cfg.Server.Log, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	if cfg.Server.DatabaseURL == "" {
		cfg.Server.DatabaseURL = "sqlite:" + filepath.Join(cfg.DataDir, "millrace.db")
	}
	if cfg.Server.Query.ResultsDir == config.DefaultResultsDir {
		cfg.Server.Query.ResultsDir = filepath.Join(cfg.DataDir, "results")
	}
	if cfg.Server.PreAgg.Dir == config.DefaultPreAggDir {
		cfg.Server.PreAgg.Dir = filepath.Join(cfg.DataDir, "preaggregates")
	}
	if cfg.Server.SecretKey == "" {
		// Dev mode needs no setup: credentials are sealed with a key kept
		// beside the store (set MILLRACE_SECRET_KEY to use your own).
		key, err := devSecretKey(filepath.Join(cfg.DataDir, "secret.key"))
		if err != nil {
			return err
		}
		cfg.Server.SecretKey = key
	}
	// Auth is on in dev too: an admin token for the user and the client
	// commands (kept in the data directory), a worker token for the
	// in-process workers.
	var adminFile string
	if cfg.Server.Auth.Mode != config.AuthNone {
		if adminFile, cfg.Worker.Token, err = devTokens(ctx, cfg.Server.DatabaseURL, cfg.DataDir); err != nil {
			return err
		}
	}
	if cfg.Server.NATS.URL == "" {
		emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: cfg.NATSPort, StoreDir: filepath.Join(cfg.DataDir, "nats")})
		if err != nil {
			return fmt.Errorf("start embedded NATS on port %d: %w (pick another with --nats-port, or -1 for any free port)", cfg.NATSPort, err)
		}
		defer emb.Shutdown() // after everything below has stopped
		cfg.Server.NATS.URL = emb.URL()
		log.Info("embedded NATS started", "url", emb.URL())
	} else {
		log.Info("using the NATS server from NATS_URL/--nats-url; no embedded NATS", "url", bus.Redact(cfg.Server.NATS.URL))
	}
	// Every pool's steps run here: dev's workers are the only ones, so the
	// default consumer takes each pool's subject too (docs/playbooks.md,
	// "Worker pools").
	cfg.Server.NATS.AllPools = true
	srv, err := server.New(ctx, cfg.Server, log)
	if err != nil {
		return err
	}
	wcfg := cfg.Worker
	wcfg.Log, wcfg.NATS, wcfg.ServerURL = cfg.Server.Log, cfg.Server.NATS, srv.URL()
	// One set of budget settings: the in-process workers render under the
	// server's (the worker's own template flags are not bound in dev).
	wcfg.Budgets = cfg.Server.Budgets
	// The in-process workers trace as a worker would, under their own
	// service name unless OTEL_SERVICE_NAME names one for the whole process.
	wcfg.Telemetry = cfg.Server.Telemetry
	if wcfg.Telemetry.ServiceName == "millrace-server" {
		wcfg.Telemetry.ServiceName = "millrace-worker"
	}
	var workers []interface{ Run(context.Context) error }
	for i := 0; i < cfg.Workers; i++ {
		c := wcfg
		if c.WorkerID != "" {
			c.WorkerID = fmt.Sprintf("%s-%d", c.WorkerID, i)
		}
		w, err := commands.New(ctx, c, log)
		if err != nil {
			srv.Close()
			return err
		}
		workers = append(workers, w)
	}
	if cfg.Server.Query.NATSEnabled {
		// Queries go to NATS: run a warehouse worker too, or they would
		// wait with nobody to take them (the stall the seeds warn about).
		qc := wcfg
		qc.Query = cfg.Server.Query
		qw, err := queries.New(ctx, queries.FromConfig(qc), log)
		if err != nil {
			srv.Close()
			return err
		}
		workers = append(workers, qw)
		// And a pre-aggregate worker: matching metric queries and
		// materializations go to PRE_AGGREGATE_QUERY_JOBS.
		pc := wcfg
		pc.PreAgg = cfg.Server.PreAgg
		if pc.WorkerID != "" { // distinct from the warehouse worker's: both hold queries
			pc.WorkerID += "-pre-aggregate"
		}
		pw, err := preaggs.New(ctx, preaggs.FromConfig(pc), log)
		if err != nil {
			srv.Close()
			return err
		}
		workers = append(workers, pw)
	}

	// One group owns the server, the workers and --run. Workers stop
	// first (on Ctrl-C, --once, or any of them failing) and the server
	// only after the last one, so that commands finishing during the
	// grace period can still report their results.
	g, gctx := errgroup.WithContext(ctx)
	srvCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	g.Go(func() error { return srv.Run(srvCtx) })
	ws, wctx := errgroup.WithContext(gctx)
	for _, w := range workers {
		ws.Go(func() error { return w.Run(wctx) })
	}
	g.Go(func() error {
		defer stopServer()
		return ws.Wait()
	})
	defer announceDev(log, cfg.DataDir, srv.URL(), cfg.Server.NATS.URL, adminFile)()
	queryWorkers := " (queries run in the server: NATS_ENABLED=false)"
	if cfg.Server.Query.NATSEnabled {
		queryWorkers = ", a warehouse worker and a pre-aggregate worker"
	}
	stop := "Press Ctrl-C to stop.\n"
	if runFile != "" && once {
		stop = ""
	}
	access := "admin token " + adminFile + "   (client commands here use it; elsewhere: --token or MILLRACE_TOKEN)"
	if adminFile == "" {
		access = "none: MILLRACE_AUTH=none, anyone who reaches the API may do anything"
	}
	fmt.Fprintf(out, `millrace dev is up
  API server   %s   (health: %s/api/health, metrics: %s/metrics)
  web UI       %s/ui/
  access       %s
  NATS         %s   (stream %s, subject %s, consumer %s)
  event store  %s
  workers      %d x concurrency %d%s
Try: millrace register FILE && millrace execute PATH --watch
     (client commands run from this directory find this instance in %s; elsewhere add --server %s)
%s`, srv.URL(), srv.URL(), srv.URL(), srv.URL(), access, bus.Redact(cfg.Server.NATS.URL), cfg.Server.NATS.Stream, cfg.Server.NATS.Subject, cfg.Server.NATS.Consumer,
		config.RedactURL(cfg.Server.DatabaseURL), cfg.Workers, cfg.Worker.Concurrency, queryWorkers, filepath.Join(cfg.DataDir, devFileName), srv.URL(), stop)

	var runErr error
	if runFile != "" {
		g.Go(func() error {
			runErr = runOnce(gctx, cmd, srv.URL(), readSecret(adminFile), runFile)
			if once {
				cancel() // the execution ended: stop everything
			}
			return nil // without --once, dev keeps running; the error is returned at the end
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return runErr
}

// devSecretKey reads the dev key at path, creating a random one (0600) the
// first time.
func devSecretKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", err
	}
	key := hex.EncodeToString(k[:])
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write dev secret key %s: %w", path, err)
	}
	return key, nil
}
