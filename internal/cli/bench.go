package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/internal/bench"
	"github.com/millrace/millrace/internal/config"
)

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load generators that measure a Millrace deployment",
	}
	cmd.AddCommand(benchFlowsCmd(), benchPreaggCmd())
	return cmd
}

func benchFlowsCmd() *cobra.Command {
	opts := bench.Options{}
	var asJSON bool
	var profileDir string
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Submit noop executions over HTTP and report throughput, latency and lost work",
		Long: `Register a chain of --steps noop steps (bench/chain-K), submit --executions
executions of it through the HTTP API from --concurrency submitters (as fast as
possible, or at --rate per second), wait for all of them and report:

  executions/s end to end (first submit to last completion),
  p50/p90/p99/max of submit -> first command.started and submit -> completed,
  NATS redeliveries on the worker pool's consumer,
  this process's CPU time per execution (steadier than throughput on a
  shared machine; self-contained it covers server, workers and NATS too,
  never the database),
  and how many executions did not complete (any makes the command fail).

Self-contained runs also report the event store's size after the run, per
stored execution (PostgreSQL: pg_total_relation_size of every table with an
execution_id or event_id column, indexes and not yet vacuumed rows included;
SQLite: their pages from dbstat), and, on PostgreSQL with pg_stat_statements
installed in the database (CREATE EXTENSION pg_stat_statements; the server
needs shared_preload_libraries=pg_stat_statements), the statements the
database ran from the first submit to the last completion, per execution,
with the most frequent ones.

Modes (self-contained only):
  --drain       submit every execution with no worker running, then start the
                workers and report the drain rate: completions from the
                workers' start to the last completion.
  --prefill N   before measuring, store N finished executions: one real
                execution, then N-1 copies of its rows made by the database
                (INSERT ... SELECT over a series, 10,000 per transaction; new
                time-ordered ids, times moved back, everything else the
                same), then VACUUM ANALYZE on PostgreSQL. 1,000,000 take a few
                minutes. The run then measures as usual: submit rate and
                completion rate with that history in the tables.
  --servers N   N API servers on the one database (PostgreSQL), each with its
                own relay and reapers; submitters and workers take turns
                over them.
  --workers N   in-process workers, each with --worker-concurrency slots.

With --server it measures a running deployment (--nats-url and friends say
where to read redeliveries). With --store it is self-contained: embedded NATS,
a server on a loopback port and --workers in-process workers, exactly as
'millrace dev' wires them. A postgres:// store gets a fresh schema bench_<random>,
dropped afterwards unless --keep.

Submit -> complete covers every execution; submit -> command start is taken
from the events of an evenly spaced sample of at most 2,000 of them, fetched
after the run. Server timestamps are compared with this machine's clock.`,
		Example: `  millrace bench flows --store sqlite:/tmp/bench.db --executions 5000
  millrace bench flows --store postgres://postgres@127.0.0.1:5432/test --executions 5000 --concurrency 64
  millrace bench flows --store sqlite:/tmp/bench.db --rate 200 --executions 2000   # latency
  millrace bench flows --server http://127.0.0.1:8082 --steps 10 --json
  millrace bench flows --store postgres://postgres@127.0.0.1:5432/test --drain --executions 100000 --timeout 30m
  millrace bench flows --store postgres://postgres@127.0.0.1:5432/test --prefill 1000000 --executions 5000
  millrace bench flows --store postgres://postgres@127.0.0.1:5432/test --servers 2 --workers 4 --executions 5000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			errOut := cmd.ErrOrStderr()
			opts.Progress = errOut
			if f, ok := errOut.(*os.File); ok {
				fi, err := f.Stat()
				opts.ProgressTTY = err == nil && fi.Mode()&os.ModeCharDevice != 0
			}
			opts.Log = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
			if opts.Token == "" {
				opts.Token = os.Getenv(tokenEnv)
			}
			stop, err := startProfiles(profileDir)
			if err != nil {
				return err
			}
			res, err := bench.Run(cmd.Context(), opts)
			if perr := stop(); perr != nil && err == nil {
				err = perr
			}
			if res != nil {
				err = errors.Join(err, printReport(cmd.OutOrStdout(), asJSON, res))
			}
			var inc *bench.IncompleteError
			if errors.As(err, &inc) {
				return exitError{code: 1, msg: err.Error()}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Server, "server", "", "URL of a running Millrace server to measure")
	f.StringVar(&opts.Token, "token", "", "With --server: API token of role operator or admin [$MILLRACE_TOKEN] (self-contained runs make their own)")
	f.StringVar(&opts.Store, "store", "", "Run self-contained on this store: postgres://… (fresh schema per run) or sqlite:PATH")
	f.BoolVar(&opts.Keep, "keep", false, "With a postgres --store: keep the bench_<random> schema for inspection")
	f.StringVar(&opts.Auth, "auth", config.AuthTokens, "With --store: the server's MILLRACE_AUTH, tokens (as in production) or none (to measure what authentication costs)")
	f.IntVar(&opts.Executions, "executions", bench.DefaultExecutions, "Executions to submit")
	f.IntVar(&opts.Concurrency, "concurrency", bench.DefaultConcurrency, "Concurrent submitters")
	f.Float64Var(&opts.Rate, "rate", 0, "Fixed arrival rate in executions per second (for latency runs); 0 submits as fast as possible")
	f.IntVar(&opts.Steps, "steps", bench.DefaultSteps, "Steps in the noop chain each execution runs")
	f.IntVar(&opts.Workers, "workers", bench.DefaultWorkers, "In-process workers (self-contained only)")
	f.IntVar(&opts.WorkerConcurrency, "worker-concurrency", bench.DefaultWorkerConcurrency, "Commands each in-process worker runs at once (self-contained only)")
	f.StringVar(&opts.WorkerAck, "worker-ack", config.DefaultWorkerAck, "When the in-process workers acknowledge a notification, claim or completion, as MILLRACE_WORKER_ACK (self-contained only)")
	f.IntVar(&opts.Servers, "servers", 1, "API servers on the one database, each with its own relay and reapers (self-contained; more than 1 needs PostgreSQL)")
	f.BoolVar(&opts.Drain, "drain", false, "Submit every execution with no worker running, then start the workers and report the drain rate (self-contained only)")
	f.IntVar(&opts.Prefill, "prefill", 0, "Store this many finished executions (copies of one real one) before measuring (self-contained only)")
	f.DurationVar(&opts.Timeout, "timeout", bench.DefaultTimeout, "Give up on executions not complete after this long (the run then fails)")
	f.BoolVar(&asJSON, "json", false, "Print the result as JSON instead of a table")
	f.StringVar(&profileDir, "profile", "", "Write cpu.pprof, mutex.pprof, block.pprof and heap.pprof of this process to this directory (a self-contained run profiles server and workers too); read them with 'go tool pprof'")
	// The NATS settings name the stream and consumer (and, with --server,
	// where to read redeliveries), with the same variables as the roles.
	bindSet(cmd, natsSet(&opts.NATS))
	return cmd
}

func natsSet(n *config.NATS) *config.Set {
	s := &config.Set{}
	config.BindNATS(s, n)
	return s
}

// startProfiles starts a CPU profile and mutex/block sampling into dir; the
// returned function stops them and writes the rest. dir "" does nothing.
func startProfiles(dir string) (func() error, error) {
	if dir == "" {
		return func() error { return nil }, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--profile: %w", err)
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return nil, fmt.Errorf("--profile: %w", err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		return nil, fmt.Errorf("--profile: %w", err)
	}
	// Sample about one in ten contended mutex events and blocking events
	// of 10µs or more: enough to see where the pipeline waits.
	runtime.SetMutexProfileFraction(10)
	runtime.SetBlockProfileRate(10_000)
	return func() error {
		pprof.StopCPUProfile()
		err := cpu.Close()
		for _, name := range []string{"mutex", "block", "heap"} {
			f, ferr := os.Create(filepath.Join(dir, name+".pprof"))
			if ferr != nil {
				err = errors.Join(err, ferr)
				continue
			}
			err = errors.Join(err, pprof.Lookup(name).WriteTo(f, 0), f.Close())
		}
		runtime.SetMutexProfileFraction(0)
		runtime.SetBlockProfileRate(0)
		if err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
		return nil
	}, nil
}

func benchPreaggCmd() *cobra.Command {
	opts := bench.PreaggOptions{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "preagg",
		Short: "Compare dashboard queries served from pre-aggregates with the warehouse, for speed and for equal answers",
		Long: `Generate an orders fact table of --rows rows in the PostgreSQL --warehouse
(table --table; kept and reused while it has exactly --rows rows), declare a
model with three pre-aggregates over it (daily, monthly, and an exact monthly
count of distinct customers), build them, then run ten dashboard-style metric
queries through the API, each --reps times on two paths:

  from the pre-aggregate, and
  from the warehouse with the pre-aggregate bypassed (usePreAggregates: false).

It reports, per query: hit or miss (with the reason), whether the two answers
are equal (any difference fails the command), the median execution time on
each path and the median submit -> ready time through the API, and their
ratio; over all hits the p50/p95 submit -> ready time; and, self-contained,
the peak resident memory of the process (server and workers, builds and
serving included). Results caches are bypassed (invalidateCache) so every
answer is computed.

With --server it measures a running deployment (which must reach the
warehouse). With --store it is self-contained: embedded NATS and a server on a
loopback port; --nats-enabled adds a warehouse worker and a pre-aggregate
worker in-process and routes queries and builds over NATS.`,
		Example: `  millrace bench preagg --warehouse postgres://postgres@127.0.0.1:5432/test --store sqlite:/tmp/b.db --rows 1000000
  millrace bench preagg --warehouse postgres://postgres@127.0.0.1:5432/test --store sqlite:/tmp/b.db --rows 10000000 --nats-enabled --json
  millrace bench preagg --warehouse postgres://analytics@db:5432/dw --server http://127.0.0.1:8082`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Progress = cmd.ErrOrStderr()
			opts.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			if opts.Token == "" {
				opts.Token = os.Getenv(tokenEnv)
			}
			res, err := bench.RunPreagg(cmd.Context(), opts)
			if res != nil {
				err = errors.Join(err, printReport(cmd.OutOrStdout(), asJSON, res))
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Warehouse, "warehouse", "", "PostgreSQL warehouse URL the fact table is generated in (required)")
	f.Int64Var(&opts.Rows, "rows", bench.DefaultPreaggRows, "Rows of the generated fact table")
	f.StringVar(&opts.Table, "table", bench.DefaultPreaggTable, "Name of the generated fact table")
	f.IntVar(&opts.Reps, "reps", bench.DefaultPreaggReps, "Timed runs of each query on each path (after one warm-up); medians are reported")
	f.StringVar(&opts.Project, "project", bench.DefaultPreaggProject, "Project the benchmark creates (or replaces) for the warehouse")
	f.StringVar(&opts.Server, "server", "", "URL of a running Millrace server to measure")
	f.StringVar(&opts.Token, "token", "", "With --server: API token of role admin (it creates a project) [$MILLRACE_TOKEN]")
	f.StringVar(&opts.Store, "store", "", "Run self-contained on this store: postgres://… (fresh schema per run) or sqlite:PATH")
	f.BoolVar(&opts.NATSEnabled, "nats-enabled", false, "Self-contained: run queries and builds on NATS workers instead of in the server")
	f.DurationVar(&opts.Timeout, "timeout", 30*time.Minute, "Give up after this long")
	f.BoolVar(&asJSON, "json", false, "Print the result as JSON instead of a table")
	return cmd
}

// printReport prints a benchmark's report as JSON or as its table.
func printReport(w io.Writer, asJSON bool, res interface{ WriteTable(io.Writer) error }) error {
	if asJSON {
		return printJSON(w, res)
	}
	return res.WriteTable(w)
}
