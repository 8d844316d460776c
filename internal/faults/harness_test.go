package faults

// The harness every fault test uses (faults 1-4 here, 5-7 in faults-b's
// files). Its API, kept short on purpose:
//
//	n := executions(t)            // MILLRACE_FAULT_EXECUTIONS (default 500; scripts/faults.sh: 10000)
//	selectFault(t, "worker-kill") // MILLRACE_FAULTS=a,b runs only those; unset runs every fault
//	s := startStack(t, stackOpts{Servers: 2, Workers: 2})
//	    // stackOpts: Servers (1), Workers (2), Concurrency (200 per worker),
//	    // DatabaseURL ("" = a fresh schema on the shared PostgreSQL),
//	    // NATSURL ("" = an embedded NATS of the test's own: s.NATS),
//	    // Env (every process), ServerEnv / WorkerEnv (those roles only),
//	    // LeaseSeconds ("5").
//	s.Servers[i].Proc, .URL, .API       // each server: process, base URL, client
//	s.Workers[i]                        // each worker process
//	s.StartServer(extra...)             // one more server, healthy when it returns
//	s.RestartServer(i)                  // SIGKILL server i, start it again at its address
//	s.StartWorker(extra...)             // one more worker
//	s.Kill(p)                           // SIGKILL p and wait for it to exit
//	ids := s.SubmitMix(n)               // n executions of the mix, concurrently, over every server
//	id, err := s.SubmitOne(ctx, api, i) // the i-th execution of the mix through api (for own submit loops)
//	s.WaitProgress(ids, 0.2)            // until 20% of ids have ended (a fault lands mid-flight)
//	s.WaitTerminal(ids)                 // until every id has ended (deadline from len(ids))
//	r := s.Check("worker-kill", ids)    // lost, doubled, extra children, verify; logs the
//	                                    // "faultrow" line scripts/faults.sh tabulates; fails t on any
//	rep := verifyStore(t, s.DB)         // the oracle alone: the store's invariants
//
// Every process is a real `millrace` (built once per test binary, without
// -race: see TestMain), stopped with SIGKILL when the test ends.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// binary is the millrace binary the tests start.
var binary string

// TestMain builds millrace without -race even when the tests run with
// -race: the matrix drives thousands of executions and a race-built server
// is several times slower; internal/e2e starts the same processes built
// with -race (its raceEnabled), so their races are still caught there.
func TestMain(m *testing.M) { proctest.Main(m, &binary) }

const (
	executionsEnv     = "MILLRACE_FAULT_EXECUTIONS"
	faultsEnv         = "MILLRACE_FAULTS"
	defaultExecutions = 500
	// submitConcurrency bounds the submissions in flight at once, as a
	// client pool would.
	submitConcurrency = 32
)

// executions is the size of each fault's mix.
func executions(t *testing.T) int {
	t.Helper()
	v := os.Getenv(executionsEnv)
	if v == "" {
		return defaultExecutions
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number of executions", executionsEnv, v)
	}
	return n
}

// selectFault skips the test when MILLRACE_FAULTS names other faults only.
// CI leaves it unset, so every fault runs there.
func selectFault(t *testing.T, name string) {
	t.Helper()
	v := os.Getenv(faultsEnv)
	if v == "" {
		return
	}
	for _, f := range strings.Split(v, ",") {
		if strings.TrimSpace(f) == name {
			return
		}
	}
	t.Skipf("%s=%s does not name %s", faultsEnv, v, name)
}

// envSeconds reads a duration in seconds from the environment, or def.
func envSeconds(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number of seconds", name, v)
	}
	return time.Duration(f * float64(time.Second))
}

type stackOpts struct {
	Servers      int      // default 1
	Workers      int      // default 2
	Concurrency  int      // slots per worker, default 200
	DatabaseURL  string   // default: a fresh schema on the shared PostgreSQL
	NATSURL      string   // default: an embedded NATS of the test's own
	Env          []string // every process
	ServerEnv    []string // servers only
	WorkerEnv    []string // workers only
	LeaseSeconds string   // MILLRACE_LEASE_SECONDS, default "5"
}

// node is one server: its process, the address it keeps across restarts
// and a client for it.
type node struct {
	Proc *proctest.Proc
	Addr string
	URL  string
	API  *client.Client
	env  []string
}

type stack struct {
	t       *testing.T
	opts    stackOpts
	NATS    *bus.Embedded // nil when opts.NATSURL was given
	DB      string
	env     []string
	Servers []*node
	Workers []*proctest.Proc
	db      *pgxpool.Pool
	mix     mix
	started time.Time
	// slowestSubmit is the longest one submission took (retries included),
	// in nanoseconds: the matrix's view of the API's tail under the fault.
	slowestSubmit atomic.Int64
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startStack starts NATS (unless given), the servers and the workers, and
// registers the mix. Servers are healthy when it returns.
func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.Servers == 0 {
		o.Servers = 1
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.Concurrency == 0 {
		o.Concurrency = 200
	}
	if o.LeaseSeconds == "" {
		o.LeaseSeconds = "5"
	}
	s := &stack{t: t, opts: o, DB: o.DatabaseURL, started: time.Now()}
	natsURL := o.NATSURL
	if natsURL == "" {
		emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Shutdown)
		s.NATS, natsURL = emb, emb.URL()
	}
	if s.DB == "" {
		s.DB = pgtest.NewSchema(t)
	}
	id := randHex(4)
	s.env = append(os.Environ(),
		"DATABASE_URL="+s.DB,
		"NATS_URL="+natsURL,
		"NATS_STREAM=F_"+id,
		"NATS_SUBJECT=f"+id+".commands",
		"NATS_CONSUMER=pool_"+id,
		"MILLRACE_LEASE_SECONDS="+o.LeaseSeconds,
		"MILLRACE_REAP_INTERVAL_SECONDS=0.5",
		"MILLRACE_REDELIVER_AFTER_SECONDS=2",
		"MILLRACE_SHUTDOWN_GRACE_SECONDS=5",
		"NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS=1",
		"NOETL_WORKER_NATS_FETCH_HEARTBEAT_SECONDS=0.4",
		"NOETL_WORKER_NATS_ACK_WAIT_SECONDS=5",
		"MILLRACE_LOG_LEVEL=warn",
		"MILLRACE_AUTH=none",
		// Directories the server makes by default in its working
		// directory, this package's source.
		"MILLRACE_RESULTS_DIR="+t.TempDir(),
		"PRE_AGGREGATE_DIR="+t.TempDir(),
	)
	s.env = append(s.env, o.Env...)
	for range o.Servers {
		s.StartServer()
	}
	for range o.Workers {
		s.StartWorker()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, s.DB)
	if err != nil {
		t.Fatalf("open the test's store for the checks: %v", err)
	}
	t.Cleanup(pool.Close)
	s.db = pool
	s.mix = registerMix(t, s.Servers[0].API)
	return s
}

// StartServer starts one more server at an address of its own, with extra
// environment entries over the stack's, and waits until it is healthy.
func (s *stack) StartServer(extra ...string) *node {
	s.t.Helper()
	addr := proctest.FreeAddr(s.t)
	n := &node{Addr: addr, URL: "http://" + addr, API: client.New("http://" + addr)}
	n.env = append(append([]string{"MILLRACE_ADDR=" + addr, "SERVER_API_URL=" + n.URL}, s.opts.ServerEnv...), extra...)
	s.Servers = append(s.Servers, n)
	s.startNode(len(s.Servers)-1, n)
	return n
}

func (s *stack) startNode(i int, n *node) {
	s.t.Helper()
	n.Proc = proctest.Start(s.t, fmt.Sprintf("server-%d", i), syscall.SIGKILL, append(append([]string{}, s.env...), n.env...), binary, "server")
	wait.For(s.t, 60*time.Second, func() error {
		if err := n.Proc.Exited(); err != nil {
			s.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(s.t.Context(), 5*time.Second)
		defer cancel()
		_, err := n.API.Health(ctx)
		return err
	})
}

// RestartServer SIGKILLs server i and starts it again at the same address.
func (s *stack) RestartServer(i int) {
	s.t.Helper()
	s.Kill(s.Servers[i].Proc)
	s.startNode(i, s.Servers[i])
}

// StartWorker starts one more worker; worker k talks to server k mod the
// number of servers unless extra (or WorkerEnv) sets SERVER_API_URL.
func (s *stack) StartWorker(extra ...string) *proctest.Proc {
	s.t.Helper()
	k := len(s.Workers)
	env := append(append([]string{}, s.env...), "SERVER_API_URL="+s.Servers[k%len(s.Servers)].URL)
	env = append(append(env, s.opts.WorkerEnv...), extra...)
	p := proctest.Start(s.t, fmt.Sprintf("worker-%d", k), syscall.SIGKILL, env, binary,
		"worker", "--concurrency", strconv.Itoa(s.opts.Concurrency))
	s.Workers = append(s.Workers, p)
	return p
}

// Kill SIGKILLs p and waits for it to exit.
func (s *stack) Kill(p *proctest.Proc) {
	s.t.Helper()
	p.Signal(syscall.SIGKILL)
	_ = p.Wait(s.t, 30*time.Second)
}

// SubmitOne starts the i-th execution of the mix through api.
func (s *stack) SubmitOne(ctx context.Context, api *client.Client, i int) (int64, error) {
	path, payload := s.mix.item(i)
	st, err := api.Execute(ctx, path, 0, payload)
	return st.ExecutionID, err
}

// SubmitMix starts n executions of the mix, submitConcurrency at a time,
// round robin over the servers, and returns their ids. Any refused
// submission fails the test: call it while the API is up.
func (s *stack) SubmitMix(n int) []int64 {
	s.t.Helper()
	ids := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, submitConcurrency)
	for range submitConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				ctx, cancel := context.WithTimeout(s.t.Context(), time.Minute)
				began := time.Now()
				id, err := s.SubmitOne(ctx, s.Servers[i%len(s.Servers)].API, i)
				cancel()
				s.noteSubmit(time.Since(began))
				if err != nil {
					errs <- fmt.Errorf("submit %d of %d: %w", i, n, err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		s.t.Fatal(err)
	}
	return ids
}

// waitFor is the deadline for n executions to end: generous, since CI
// runs this next to every other package on two cores.
func waitFor(n int) time.Duration {
	return 4*time.Minute + time.Duration(n)*60*time.Millisecond
}

// ended counts the executions of ids that are no longer running.
func (s *stack) ended(ids []int64) (int, error) {
	ctx, cancel := context.WithTimeout(s.t.Context(), 30*time.Second)
	defer cancel()
	var n int
	err := s.db.QueryRow(ctx,
		`SELECT count(*) FROM executions WHERE execution_id = ANY($1) AND status <> 'running'`, ids).Scan(&n)
	return n, err
}

// WaitProgress waits until at least frac of ids have ended, so a fault
// lands while the rest are in flight.
func (s *stack) WaitProgress(ids []int64, frac float64) {
	s.t.Helper()
	want := int(frac * float64(len(ids)))
	wait.For(s.t, waitFor(len(ids)), func() error {
		n, err := s.ended(ids)
		if err != nil {
			return err
		}
		if n < want {
			return fmt.Errorf("%d of %d executions ended, waiting for %d", n, len(ids), want)
		}
		return nil
	})
}

// WaitTerminal waits until every execution of ids has ended; one still
// running at the deadline is reported by Check as lost, so it does not
// fail the test itself.
func (s *stack) WaitTerminal(ids []int64) {
	s.t.Helper()
	err := wait.Poll(waitFor(len(ids)), func() error {
		n, err := s.ended(ids)
		if err != nil {
			return err
		}
		if n < len(ids) {
			return fmt.Errorf("%d of %d executions still running", len(ids)-n, len(ids))
		}
		return nil
	})
	if err != nil {
		s.t.Errorf("not within %s: %v", waitFor(len(ids)), err)
	}
}

// faultResult is one row of the matrix.
type faultResult struct {
	Fault         string
	Executions    int
	Lost          int // submitted executions that did not complete
	Doubled       int // commands with more than one command.completed
	ExtraChildren int // child executions beyond one per parent command
	Violations    int // what the oracle (verifyStore) reported
	Duration      time.Duration
}

// Check counts what the fault cost, logs the matrix row and fails the test
// on anything lost, doubled or violated.
func (s *stack) Check(fault string, ids []int64) faultResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := faultResult{Fault: fault, Executions: len(ids), Duration: time.Since(s.started)}
	var completed int
	if err := s.db.QueryRow(ctx,
		`SELECT count(*) FROM executions WHERE execution_id = ANY($1) AND status = 'completed'`, ids).Scan(&completed); err != nil {
		s.t.Fatalf("count completed executions: %v", err)
	}
	r.Lost = len(ids) - completed
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT command_id FROM events WHERE event_type = 'command.completed'
		GROUP BY execution_id, command_id HAVING count(*) > 1) d`).Scan(&r.Doubled); err != nil {
		s.t.Fatalf("count doubled completions: %v", err)
	}
	// The mix's parents run one child each; a second child for the same
	// parent means a re-run parent command started its child again.
	if err := s.db.QueryRow(ctx, `SELECT coalesce(sum(n - 1), 0) FROM (
		SELECT count(*) AS n FROM executions WHERE parent_execution_id <> 0
		GROUP BY parent_execution_id HAVING count(*) > 1) d`).Scan(&r.ExtraChildren); err != nil {
		s.t.Fatalf("count extra children: %v", err)
	}
	rep := verifyStore(s.t, s.DB)
	r.Violations = len(rep.Violations)
	s.t.Logf("faultrow fault=%s executions=%d lost=%d doubled=%d extra_children=%d violations=%d duration=%s slowest_submit=%s",
		r.Fault, r.Executions, r.Lost, r.Doubled, r.ExtraChildren, r.Violations, r.Duration.Round(100*time.Millisecond),
		time.Duration(s.slowestSubmit.Load()).Round(10*time.Millisecond))
	s.logPools(ctx)
	if r.Lost > 0 {
		s.t.Errorf("%s: %d of %d executions did not complete:\n%s", fault, r.Lost, len(ids), s.notCompleted(ctx, ids))
	}
	if r.Doubled > 0 {
		s.t.Errorf("%s: %d commands completed more than once", fault, r.Doubled)
	}
	if r.ExtraChildren > 0 {
		s.t.Errorf("%s: %d child executions were started again by a re-run parent command", fault, r.ExtraChildren)
	}
	for i, v := range rep.Violations {
		if i == 20 {
			s.t.Errorf("… and %d more violations", len(rep.Violations)-i)
			break
		}
		s.t.Errorf("%s: verify: %s execution %d command %d: %s", fault, v.Check, v.ExecutionID, v.CommandID, v.Detail)
	}
	return r
}

// noteSubmit keeps the slowest submission.
func (s *stack) noteSubmit(d time.Duration) {
	for {
		old := s.slowestSubmit.Load()
		if int64(d) <= old || s.slowestSubmit.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// logPools logs each live server's event-store pool counters: waits for a
// connection are where a saturated store shows first.
func (s *stack) logPools(ctx context.Context) {
	for i, n := range s.Servers {
		m, err := scrapeMetrics(ctx, n.URL)
		if err != nil {
			s.t.Logf("server %d: pool metrics: %v", i, err)
			continue
		}
		s.t.Logf("server %d pool: max=%g acquires=%g waited=%g cancelled=%g wait=%.1fs", i,
			m["millrace_db_pool_max_connections"], m["millrace_db_pool_acquires_total"],
			m["millrace_db_pool_waited_acquires_total"], m["millrace_db_pool_cancelled_acquires_total"],
			m["millrace_db_pool_acquire_wait_seconds_total"])
	}
}

// notCompleted describes up to ten executions of ids that did not complete.
func (s *stack) notCompleted(ctx context.Context, ids []int64) string {
	rows, err := s.db.Query(ctx, `SELECT execution_id, path, status, error FROM executions
		WHERE execution_id = ANY($1) AND status <> 'completed' ORDER BY execution_id LIMIT 10`, ids)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id int64
		var path, status, msg string
		if err := rows.Scan(&id, &path, &status, &msg); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&b, "  %d %s %s %s\n", id, path, status, msg)
	}
	return b.String()
}

// scrapeMetrics reads a server's /metrics into name -> value for the
// unlabelled series (the first sample of a name wins).
func scrapeMetrics(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if _, seen := out[name]; seen {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}
