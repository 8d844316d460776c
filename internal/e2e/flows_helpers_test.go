package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// testSecretKey encrypts the credentials the e2e servers store; any 32
// bytes do.
const testSecretKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// cliTimeout bounds one `millrace` CLI subprocess (run, validate). It
// guards against a hang, not a slow run: the package runs dozens of real
// processes in parallel under -race on two cores, and a corpus run that
// takes seconds alone once needed more than 90 s beside the pre-aggregate
// tests.
const cliTimeout = 4 * time.Minute

// newFlowCluster starts a server that can store credentials and n workers.
func newFlowCluster(t *testing.T, workers int) *cluster {
	t.Helper()
	c := newCluster(t, clusterOpts{})
	c.env = append(c.env, "MILLRACE_SECRET_KEY="+testSecretKey)
	c.startServer()
	for range workers {
		c.startWorker(20)
	}
	return c
}

// newDatabase creates an empty PostgreSQL database for the tools of one
// test (some playbooks name `public.` tables, so a schema is not enough)
// and returns its URL. It is dropped when the test ends.
func newDatabase(t *testing.T) string {
	t.Helper()
	name := "e2e_" + randHex(8)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.URL())
	if err != nil {
		t.Fatalf("connect to PostgreSQL at %s: %v", pgtest.URL(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// Not t.Context(): that is cancelled before cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgtest.URL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(pgtest.URL())
	if err != nil {
		t.Fatalf("parse %s: %v", pgtest.URL(), err)
	}
	u.Path = "/" + name
	return u.String()
}

// query runs sql on dbURL and returns the rows as maps.
func query(t *testing.T, dbURL, sql string, args ...any) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// putCredential stores a credential through the API.
func (c *cluster) putCredential(name, kind string, data map[string]any) {
	c.t.Helper()
	if _, err := c.api.CredentialPut(c.t.Context(), api.Credential{Name: name, Kind: kind, Data: data}); err != nil {
		c.t.Fatalf("store credential %s: %v", name, err)
	}
}

// execute starts path with payload and waits until it ends.
func (c *cluster) executeAndWait(path string, payload map[string]any, d time.Duration) api.Execution {
	c.t.Helper()
	st, err := c.api.Execute(c.t.Context(), path, 0, payload)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.waitAll([]int64{st.ExecutionID}, d)[0]
}

func (c *cluster) events(id int64) []api.Event {
	c.t.Helper()
	evs, err := c.api.Events(c.t.Context(), id)
	if err != nil {
		c.t.Fatal(err)
	}
	return evs
}

// children returns the ids of the executions whose recorded parent is id.
// It reads the server's database: the API's execution view does not show
// parent_execution_id.
func (c *cluster) children(id int64) []int64 {
	c.t.Helper()
	var dbURL string
	for _, kv := range c.env {
		if v, ok := strings.CutPrefix(kv, "DATABASE_URL="); ok {
			dbURL = v
		}
	}
	var out []int64
	for _, r := range query(c.t, dbURL, "SELECT execution_id FROM executions WHERE parent_execution_id = $1 ORDER BY execution_id", id) {
		out = append(out, r["execution_id"].(int64))
	}
	return out
}

// eventsOf filters events by type and (unless empty) step.
func eventsOf(evs []api.Event, typ, step string) []api.Event {
	var out []api.Event
	for _, e := range evs {
		if e.EventType == typ && (step == "" || e.Step == step) {
			out = append(out, e)
		}
	}
	return out
}

// cli runs the millrace binary with env added to the test's environment
// and returns stdout, stderr and the exit code.
func cli(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(append(os.Environ(), "MILLRACE_LOG_LEVEL=warn"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("millrace %s did not finish within %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), cliTimeout, &stdout, &stderr)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("millrace %s: %v", strings.Join(args, " "), err)
	}
	if out := stderr.String(); strings.Contains(out, "WARNING: DATA RACE") {
		t.Errorf("millrace %s reported a data race:\n%s", strings.Join(args, " "), out)
	}
	return stdout.String(), stderr.String(), code
}

// runJSON runs `millrace run ... --json` and decodes the execution record
// it prints, whether or not the execution completed.
func runJSON(t *testing.T, args ...string) (api.Execution, int) {
	t.Helper()
	stdout, stderr, code := cli(t, nil, append([]string{"run", "--json"}, args...)...)
	var ex api.Execution
	if err := json.Unmarshal([]byte(stdout), &ex); err != nil || ex.ExecutionID == 0 {
		t.Fatalf("millrace run %s (exit %d) printed no execution record: %v\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), code, err, stdout, stderr)
	}
	if ex.Status != api.ExecCompleted {
		t.Logf("millrace run %s: stderr:\n%s", strings.Join(args, " "), stderr)
	}
	return ex, code
}

// writeCredentials writes a --credentials file for the local runtime.
func writeCredentials(t *testing.T, creds map[string]map[string]any) string {
	t.Helper()
	b, err := json.Marshal(creds)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "credentials.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// decode unmarshals a JSON result into a generic value.
func decode(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// mustStatus fails unless ex has the wanted status.
func mustStatus(t *testing.T, ex api.Execution, want api.ExecStatus) {
	t.Helper()
	if ex.Status != want {
		t.Fatalf("execution %d (%s) is %s (error: %q, result: %s), want %s", ex.ExecutionID, ex.Path, ex.Status, ex.Error, ex.Result, want)
	}
}

// repoFile is a path under the repository root.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// num reads a JSON number.
func num(t *testing.T, v any) float64 {
	t.Helper()
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%v (%T) is not a number", v, v)
	}
	return f
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
