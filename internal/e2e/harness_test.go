package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

// binary is the millrace binary built once for all tests in this package.
var binary string

func TestMain(m *testing.M) {
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	proctest.Main(m, &binary, flags...)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cluster is one test's deployment: embedded NATS, a fresh PostgreSQL
// schema (or SQLite file), servers and workers as real processes.
type cluster struct {
	t      *testing.T
	nats   *bus.Embedded
	env    []string
	addr   string
	url    string
	server *proctest.Proc
	procs  []*proctest.Proc
	api    *client.Client
}

type clusterOpts struct {
	lease string // MILLRACE_LEASE_SECONDS
	db    string // DATABASE_URL; empty = fresh PostgreSQL schema; "none" = unset
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	db := o.db
	if db == "" {
		db = pgtest.NewSchema(t)
	}
	if o.lease == "" {
		o.lease = "2"
	}
	id := randHex(4)
	addr := proctest.FreeAddr(t)
	c := &cluster{t: t, nats: emb, addr: addr, url: "http://" + addr}
	c.env = append(os.Environ(),
		"DATABASE_URL="+db,
		"NATS_URL="+emb.URL(),
		"NATS_STREAM=T_"+id,
		"NATS_SUBJECT=t"+id+".commands",
		"NATS_CONSUMER=pool_"+id,
		"MILLRACE_ADDR="+addr,
		"SERVER_API_URL="+c.url,
		"MILLRACE_LEASE_SECONDS="+o.lease,
		"MILLRACE_REAP_INTERVAL_SECONDS=0.2",
		"MILLRACE_REDELIVER_AFTER_SECONDS=1",
		"MILLRACE_SHUTDOWN_GRACE_SECONDS=5",
		"NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS=1",
		"NOETL_WORKER_NATS_FETCH_HEARTBEAT_SECONDS=0.4",
		"NOETL_WORKER_NATS_ACK_WAIT_SECONDS=3",
		"MILLRACE_LOG_LEVEL=info",
		// The fault tests drive the API without tokens; TestAuthEndToEnd
		// turns auth back on for its processes.
		"MILLRACE_AUTH=none",
	)
	if o.db == "none" {
		// dev mode brings its own store and derives its own URL
		env := c.env[:0]
		for _, kv := range c.env {
			if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "SERVER_API_URL=") && !strings.HasPrefix(kv, "MILLRACE_ADDR=") {
				env = append(env, kv)
			}
		}
		c.env = env
	}
	c.api = client.New(c.url)
	return c
}

func (c *cluster) start(name string, args ...string) *proctest.Proc {
	c.t.Helper()
	return c.startEnv(name, nil, args...)
}

// startEnv starts a millrace process with extra environment entries that
// override the cluster's.
func (c *cluster) startEnv(name string, extra []string, args ...string) *proctest.Proc {
	c.t.Helper()
	p := proctest.Start(c.t, name, syscall.SIGKILL, append(append([]string{}, c.env...), extra...), binary, args...)
	c.procs = append(c.procs, p)
	return p
}

// startServer starts `millrace server` and waits until it is healthy.
func (c *cluster) startServer() *proctest.Proc {
	c.t.Helper()
	p := c.start(fmt.Sprintf("server-%d", len(c.procs)), "server")
	c.server = p
	c.waitHealthy(p)
	return p
}

// startSecondServer starts another `millrace server` on the same database
// and NATS, at an address of its own, and returns a client for it once it
// is healthy.
func (c *cluster) startSecondServer() *client.Client {
	c.t.Helper()
	addr := proctest.FreeAddr(c.t)
	url := "http://" + addr
	p := c.startEnv("server-2", []string{"MILLRACE_ADDR=" + addr, "SERVER_API_URL=" + url, "MILLRACE_NODE_ID=2"}, "server")
	api2 := client.New(url)
	waitHealthyAt(c.t, p, api2)
	return api2
}

func (c *cluster) waitHealthy(p *proctest.Proc) {
	c.t.Helper()
	waitHealthyAt(c.t, p, c.api)
}

// waitHealthyAt waits until api answers health, failing at once if p exits.
func waitHealthyAt(t *testing.T, p *proctest.Proc, api *client.Client) {
	t.Helper()
	wait.For(t, 30*time.Second, func() error {
		if err := p.Exited(); err != nil {
			t.Fatal(err)
		}
		_, err := api.Health(t.Context())
		return err
	})
}

// startDev starts `millrace dev` on its own NATS with its data under dir,
// points c's client at it and waits until it answers.
func (c *cluster) startDev(dir string, workers, concurrency int) *proctest.Proc {
	c.t.Helper()
	addr := proctest.FreeAddr(c.t)
	p := c.start("dev", "dev", "--data-dir", dir, "--nats-port", "-1", "--addr", addr,
		"--workers", fmt.Sprint(workers), "--concurrency", fmt.Sprint(concurrency))
	c.url = "http://" + addr
	c.api = client.New(c.url)
	c.waitHealthy(p)
	return p
}

// enableQueries turns on the query face for the processes c starts next,
// on a stream of their own, and returns the id that names it.
func (c *cluster) enableQueries() string {
	id := randHex(4)
	c.env = append(c.env,
		"NATS_ENABLED=true",
		"MILLRACE_SECRET_KEY="+randHex(32),
		"MILLRACE_RESULTS_DIR="+c.t.TempDir(),
		"MILLRACE_QUERY_STREAM=WQ_"+id,
		"MILLRACE_QUERY_SUBJECT=wq"+id+".jobs",
		"MILLRACE_QUERY_CONSUMER=wq_"+id,
	)
	return id
}

func (c *cluster) startWorker(concurrency int) *proctest.Proc {
	c.t.Helper()
	return c.start(fmt.Sprintf("worker-%d", len(c.procs)), "worker", "--concurrency", fmt.Sprint(concurrency))
}

func (c *cluster) register(content string) api.Registered {
	c.t.Helper()
	r, err := c.api.Register(c.t.Context(), content)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// executeMany starts n executions concurrently and returns their ids.
func (c *cluster) executeMany(path string, n int, payload func(i int) map[string]any) []int64 {
	c.t.Helper()
	ids := make([]int64, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p map[string]any
			if payload != nil {
				p = payload(i)
			}
			st, err := c.api.Execute(c.t.Context(), path, 0, p)
			if err != nil {
				errs <- err
				return
			}
			ids[i] = st.ExecutionID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
	return ids
}

// waitAll waits until every execution has ended and returns them.
func (c *cluster) waitAll(ids []int64, d time.Duration) []api.Execution {
	c.t.Helper()
	out := make([]api.Execution, len(ids))
	wait.For(c.t, d, func() error {
		running := 0
		for i, id := range ids {
			if out[i].Status != "" && out[i].Status != api.ExecRunning {
				continue
			}
			ex, err := c.api.Execution(c.t.Context(), id)
			if err != nil {
				return err
			}
			out[i] = ex
			if ex.Status == api.ExecRunning {
				running++
			}
		}
		if running > 0 {
			return fmt.Errorf("%d of %d executions still running", running, len(ids))
		}
		return nil
	})
	return out
}

// checkExactlyOnce asserts every execution completed and every issued
// command has exactly one command.completed and no command.failed. It
// returns the highest attempt number seen.
func (c *cluster) checkExactlyOnce(ids []int64, wantSteps map[string]bool) int {
	c.t.Helper()
	maxAttempt := 0
	for _, id := range ids {
		ex, err := c.api.Execution(c.t.Context(), id)
		if err != nil {
			c.t.Fatal(err)
		}
		if ex.Status != api.ExecCompleted {
			c.t.Fatalf("execution %d is %s (%s), want completed", id, ex.Status, ex.Error)
		}
		evs, err := c.api.Events(c.t.Context(), id)
		if err != nil {
			c.t.Fatal(err)
		}
		issued := map[string]string{}
		completed := map[string]int{}
		steps := map[string]bool{}
		for _, e := range evs {
			switch e.EventType {
			case api.EvCommandIssued:
				issued[e.CommandID] = e.Step
			case api.EvCommandCompleted:
				completed[e.CommandID]++
				steps[e.Step] = true
				maxAttempt = max(maxAttempt, e.Attempt)
			case api.EvCommandFailed:
				c.t.Fatalf("execution %d: unexpected command.failed for %s: %s", id, e.CommandID, e.Error)
			}
		}
		for cmd, step := range issued {
			if completed[cmd] != 1 {
				c.t.Fatalf("execution %d: command %s (step %s) has %d command.completed events, want exactly 1", id, cmd, step, completed[cmd])
			}
		}
		if len(completed) != len(issued) {
			c.t.Fatalf("execution %d: %d completed commands for %d issued", id, len(completed), len(issued))
		}
		for s := range wantSteps {
			if !steps[s] {
				c.t.Fatalf("execution %d: step %s never completed (completed: %v)", id, s, steps)
			}
		}
	}
	return maxAttempt
}

// countEvents counts events of a type across executions.
func (c *cluster) countEvents(ids []int64, typ string) int {
	c.t.Helper()
	n := 0
	for _, id := range ids {
		evs, err := c.api.Events(c.t.Context(), id)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, e := range evs {
			if e.EventType == typ {
				n++
			}
		}
	}
	return n
}

// waitStarted waits until at least n commands of ids have started.
func (c *cluster) waitStarted(ids []int64, n int) {
	c.t.Helper()
	wait.For(c.t, 30*time.Second, func() error {
		if got := c.countEvents(ids, api.EvCommandStarted); got < n {
			return fmt.Errorf("%d of %d commands started", got, n)
		}
		return nil
	})
}
