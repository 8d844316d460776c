package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/wait"
)

// slowFlow keeps a worker busy for a while on each execution.
const slowFlow = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: slow
  path: e2e/slow
workflow:
  - step: start
    tool:
      kind: shell
      cmds:
        - "sleep 2; echo slept"
    next:
      arcs:
        - step: again
  - step: again
    tool:
      kind: shell
      cmds:
        - "sleep 2; echo slept again"
`

// closedErrors are what a process logs when something it closed at exit is
// still in use: the store closed under a running goroutine, NATS closed
// under a handler.
var closedErrors = []string{"database is closed", "store is closed", "connection closed", "use of closed", "closed pool", "conn closed", "connection is closed"}

// checkCleanExit asserts that p exited 0 and logged no "closed" error.
func checkCleanExit(t *testing.T, p *proctest.Proc, d time.Duration) {
	t.Helper()
	if err := p.Wait(t, d); err != nil {
		t.Errorf("%s exited with %v after SIGTERM, want 0", p.Name(), err)
	}
	for _, line := range strings.Split(p.Output(), "\n") {
		for _, bad := range closedErrors {
			if strings.Contains(strings.ToLower(line), bad) {
				t.Errorf("%s logged a %q error during shutdown: %s", p.Name(), bad, line)
			}
		}
	}
}

// inFlightQueries submits n warehouse queries that sleep in PostgreSQL
// (longer than any shutdown grace) and
// waits until PostgreSQL runs them.
func inFlightQueries(t *testing.T, c *client.Client, project string, n int) []string {
	t.Helper()
	ctx := t.Context()
	if _, err := c.ProjectPut(ctx, project, api.WarehouseConn{Type: "postgres", URL: pgtest.URL()}); err != nil {
		t.Fatal(err)
	}
	uuids := make([]string, n)
	for i := range uuids {
		// A distinct comment per query: the cache must not fold them.
		sub, err := c.QuerySubmit(ctx, project, fmt.Sprintf("select pg_sleep(20) /* %s %d */", project, i), "", false)
		if err != nil {
			t.Fatal(err)
		}
		uuids[i] = sub.QueryUUID
	}
	pg, err := pgx.Connect(ctx, pgtest.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	wait.For(t, 30*time.Second, func() error {
		var active int
		err := pg.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND query LIKE 'select pg_sleep(20) /* '||$1||' %'`, project).Scan(&active)
		if err == nil && active < n {
			err = fmt.Errorf("%d of %d queries are running in PostgreSQL", active, n)
		}
		return err
	})
	return uuids
}

// SIGTERM while flows and warehouse queries are in flight, on the
// deployment users run: a server, a commands worker and a warehouse worker.
// Each exits 0 and logs no "closed" error.
func TestShutdownDuringInFlightWork(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	id := c.enableQueries()
	srv := c.startServer()
	w := c.startWorker(10)
	wh := c.start("warehouse-worker", "worker", "--stream", "warehouse", "--concurrency", "4")
	reg := c.register(slowFlow)
	ids := c.executeMany(reg.Path, 4, nil)
	inFlightQueries(t, c.api, "shutdown_"+id, 3)
	c.waitStarted(ids, 4)

	// Workers first, as a rolling deploy stops them: what finishes in the
	// grace period must still reach the server.
	w.Signal(syscall.SIGTERM)
	wh.Signal(syscall.SIGTERM)
	checkCleanExit(t, w, 30*time.Second)
	checkCleanExit(t, wh, 30*time.Second)
	srv.Signal(syscall.SIGTERM)
	checkCleanExit(t, srv, 30*time.Second)
}

// SIGTERM to `millrace dev` while flows run on its workers and warehouse
// queries run in its server (NATS_ENABLED=false): it exits 0, logs no
// "closed" error, and gives every query an outcome before it closes the
// store, so none is left pending for the next start to clean up.
func TestDevShutdownDuringInFlightWork(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCluster(t, clusterOpts{db: "none"})
	env := c.env[:0]
	for _, kv := range c.env {
		if !strings.HasPrefix(kv, "NATS_URL=") { // the embedded NATS, this time
			env = append(env, kv)
		}
	}
	c.env = env
	p := c.startDev(dir, 1, 10)
	reg := c.register(slowFlow)
	ids := c.executeMany(reg.Path, 4, nil)
	uuids := inFlightQueries(t, c.api, "dev_shutdown_"+randHex(4), 3)
	c.waitStarted(ids, 4)

	p.Signal(syscall.SIGTERM)
	checkCleanExit(t, p, 60*time.Second)

	// Read what the process left behind.
	ctx := t.Context()
	drv, err := sqlitedriver.Open(ctx, filepath.Join(dir, "millrace.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	for _, u := range uuids {
		var q store.Query
		if err := drv.Read(ctx, func(qq store.Querier) error {
			var err error
			q, err = qq.QueryGet(ctx, u)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if q.Status == api.QueryPending {
			t.Errorf("query %s was left pending by the shutdown; want an outcome recorded before the store closed", u)
		}
	}
}
