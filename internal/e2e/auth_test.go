package e2e

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/client"
)

// Authentication as an operator meets it, with real processes: a
// `millrace server` with auth on (PostgreSQL), the first admin token made
// straight into the store with DATABASE_URL, tokens for a worker, an
// operator and a viewer made by that admin through the API, a `millrace
// worker` running an execution the operator started, a viewer refused,
// bad worker tokens refused at the worker's start, and list and revoke.
func TestAuthEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.env = append(c.env, "MILLRACE_AUTH=tokens", "MILLRACE_AUTH_CACHE_SECONDS=10")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	// Bootstrap: no token exists yet, so the first comes from the store.
	admin := authCLIToken(t, c, nil, "token", "create", "--role", "admin", "--name", "first-admin")
	c.startServer()
	ctx := t.Context()

	// Without a token, and with a made-up one: 401, saying what to do.
	_, stderr, code := authCLI(t, c, "", "executions", "list")
	if code == 0 || !strings.Contains(stderr, "unauthenticated") || !strings.Contains(stderr, "MILLRACE_TOKEN") {
		t.Fatalf("no token: exit %d, stderr %q", code, stderr)
	}
	if _, err := client.New(c.url).WithToken("mrt_"+strings.Repeat("x", 43)).Executions(ctx, 1, 1); client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("made-up token: %v, want 401", err)
	}

	// The admin makes the others through the API (no DATABASE_URL).
	worker := authCLIToken(t, c, &admin, "token", "create", "--role", "worker", "--name", "pool")
	operator := authCLIToken(t, c, &admin, "token", "create", "--role", "operator", "--name", "ops", "--expires", "1d")
	viewer := authCLIToken(t, c, &admin, "token", "create", "--role", "viewer", "--name", "watcher")

	// Workers check their token at start: unknown and wrong-role tokens
	// stop them with what to do; the worker token runs.
	for _, bad := range []struct{ token, want string }{
		{"mrt_" + strings.Repeat("y", 43), "not accepted by the server"},
		{operator, "role operator"},
	} {
		p := c.startEnv("bad-worker", []string{"MILLRACE_WORKER_TOKEN=" + bad.token}, "worker", "--concurrency", "2")
		if err := p.Wait(t, 60*time.Second); err == nil || !strings.Contains(p.Output(), bad.want) || !strings.Contains(p.Output(), "millrace token create --role worker") {
			t.Fatalf("worker with a bad token: exit %v, want failure saying %q and how to make a worker token\n%s", err, bad.want, p.Output())
		}
	}
	wp := c.startEnv("worker", []string{"MILLRACE_WORKER_TOKEN=" + worker}, "worker", "--concurrency", "4")

	// The operator registers and runs a playbook; the worker runs it.
	if out, stderr, code := authCLI(t, c, operator, "register", filepath.Join(root, "examples", "branching.yaml")); code != 0 {
		t.Fatalf("operator register: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := authCLI(t, c, operator, "execute", "examples/branching", "--watch"); code != 0 || !strings.Contains(out, "result:") {
		t.Fatalf("operator execute --watch: exit %d\n%s%s\n--- worker\n%s", code, out, stderr, wp.Output())
	}
	if !strings.Contains(wp.Output(), "worker token accepted") {
		t.Errorf("the worker did not log its token check:\n%s", wp.Output())
	}

	// A viewer reads but may not execute.
	if out, stderr, code := authCLI(t, c, viewer, "executions", "list"); code != 0 || !strings.Contains(out, "examples/branching") {
		t.Fatalf("viewer executions list: exit %d\n%s%s", code, out, stderr)
	}
	_, stderr, code = authCLI(t, c, viewer, "execute", "examples/branching")
	if code == 0 || !strings.Contains(stderr, "forbidden") {
		t.Fatalf("viewer execute: exit %d, stderr %q, want 403 forbidden", code, stderr)
	}
	_, err = client.New(c.url).WithToken(viewer).Execute(ctx, "examples/branching", 0, nil)
	if client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("viewer execute through the client: %v, want 403", err)
	}
	// doctor says who a token is.
	if out, stderr, code := authCLI(t, c, viewer, "doctor"); code != 0 || !strings.Contains(out, "token    role viewer (api ") || !strings.Contains(out, `"watcher"`) {
		t.Fatalf("doctor with the viewer token: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, _ := authCLI(t, c, "", "doctor"); !strings.Contains(out, "token    none: set MILLRACE_TOKEN") {
		t.Fatalf("doctor without a token:\n%s", out)
	}
	// Only admins manage tokens.
	if _, stderr, code := authCLI(t, c, operator, "token", "list"); code == 0 || !strings.Contains(stderr, "forbidden") {
		t.Fatalf("operator token list: exit %d, stderr %q", code, stderr)
	}

	// List shows every token and its last use; revoke ends the operator's.
	out, stderr, code := authCLI(t, c, admin, "token", "list")
	if code != 0 {
		t.Fatalf("token list: exit %d\n%s", code, stderr)
	}
	for _, name := range []string{"first-admin", "pool", "ops", "watcher"} {
		if !strings.Contains(out, name) {
			t.Errorf("token list lacks %s:\n%s", name, out)
		}
	}
	for _, s := range []string{admin, worker, operator, viewer} {
		if strings.Contains(out, s) {
			t.Fatalf("token list shows a secret:\n%s", out)
		}
	}
	if out, stderr, code := authCLI(t, c, admin, "token", "revoke", "ops"); code != 0 || !strings.Contains(out, "revoked token") {
		t.Fatalf("token revoke: exit %d\n%s%s", code, out, stderr)
	}
	_, stderr, code = authCLI(t, c, operator, "executions", "list")
	if code == 0 || !strings.Contains(stderr, "unauthenticated") {
		t.Fatalf("revoked token: exit %d, stderr %q, want 401", code, stderr)
	}
	// A revoked token and a made-up one get the same answer.
	_, errRevoked := client.New(c.url).WithToken(operator).Executions(ctx, 1, 1)
	_, errUnknown := client.New(c.url).WithToken("mrt_"+strings.Repeat("z", 43)).Executions(ctx, 1, 1)
	if errRevoked == nil || errUnknown == nil || errRevoked.Error() != errUnknown.Error() {
		t.Fatalf("revoked: %v; unknown: %v; want the same 401", errRevoked, errUnknown)
	}

	// The worker stops cleanly.
	wp.Signal(syscall.SIGTERM)
	if err := wp.Wait(t, 60*time.Second); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, wp.Output())
	}
}

// authCLI runs a client command against c's server with token (none if
// ""), without DATABASE_URL, so token commands go through the API.
func authCLI(t *testing.T, c *cluster, token string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	env := []string{}
	for _, kv := range c.env {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "MILLRACE_TOKEN=") {
			env = append(env, kv)
		}
	}
	if token != "" {
		env = append(env, "MILLRACE_TOKEN="+token)
	}
	ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(env, "MILLRACE_LOG_LEVEL=warn")
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("millrace %s: %v\n%s%s", strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String(), e.String(), code
}

// authCLIToken runs a token create and returns the secret it printed. With
// admin nil it runs with the cluster's DATABASE_URL (on the store).
func authCLIToken(t *testing.T, c *cluster, admin *string, args ...string) string {
	t.Helper()
	var stdout, stderr string
	var code int
	if admin == nil {
		stdout, stderr, code = c.runCLISplit(args...)
	} else {
		stdout, stderr, code = authCLI(t, c, *admin, args...)
	}
	secret := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(secret, "mrt_") || strings.Contains(secret, "\n") {
		t.Fatalf("millrace %s: exit %d, stdout %q, stderr %q; want only the secret on stdout", strings.Join(args, " "), code, stdout, stderr)
	}
	return secret
}
