package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/proctest"
	"github.com/millrace/millrace/internal/wait"
)

// pgBinDir holds initdb and pg_ctl; MILLRACE_PG_BIN overrides it.
const pgBinDir = "/usr/lib/postgresql/15/bin"

// pgCluster is a PostgreSQL cluster of the test's own (initdb on a random
// port), so a fault can restart it without touching the shared database.
type pgCluster struct {
	dir  string // data directory, also the unix socket directory
	port int
	bin  string
}

// startPGCluster runs initdb into a fresh directory and starts the cluster
// on a free loopback port; it is stopped and removed when the test ends.
// initdb refuses to run as root, so as root it runs as the postgres user.
func startPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	bin := os.Getenv("MILLRACE_PG_BIN")
	if bin == "" {
		bin = pgBinDir
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		t.Fatalf("initdb not found in %s (%v): install PostgreSQL 15's server binaries or set MILLRACE_PG_BIN to their directory", bin, err)
	}
	// Not t.TempDir: its parents are 0700 root, which the postgres user
	// cannot traverse. /tmp is world-traversable.
	dir, err := os.MkdirTemp("", "millrace-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, initdb needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	_, port, _ := splitHostPort(proctest.FreeAddr(t))
	c := &pgCluster{dir: dir, port: port, bin: bin}
	c.run(t, "initdb", "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	t.Cleanup(func() {
		// Best effort: the cluster may already be down after a fault.
		_ = c.command("pg_ctl", "stop", "-D", dir, "-m", "immediate", "-w", "-t", "60").Run()
	})
	c.run(t, "pg_ctl", "start", "-D", dir, "-w", "-t", "120", "-l", filepath.Join(dir, "server.log"),
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300", port, dir))
	c.waitReady(t, 2*time.Minute)
	return c
}

// URL is the cluster's postgres database, which Millrace migrates.
func (c *pgCluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Stop stops the cluster at once (`-m immediate`: no checkpoint, every
// connection cut; the next start runs crash recovery).
func (c *pgCluster) Stop(t *testing.T) {
	t.Helper()
	c.run(t, "pg_ctl", "stop", "-D", c.dir, "-m", "immediate", "-w", "-t", "60")
}

// Start starts a stopped cluster with its first options and waits until
// it answers.
func (c *pgCluster) Start(t *testing.T) {
	t.Helper()
	c.run(t, "pg_ctl", "start", "-D", c.dir, "-w", "-t", "120", "-l", filepath.Join(c.dir, "server.log"),
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300", c.port, c.dir))
	c.waitReady(t, 2*time.Minute)
}

// RestartImmediate is `pg_ctl restart -m immediate`.
func (c *pgCluster) RestartImmediate(t *testing.T) {
	t.Helper()
	c.run(t, "pg_ctl", "restart", "-D", c.dir, "-m", "immediate", "-w", "-t", "120", "-l", filepath.Join(c.dir, "server.log"))
	c.waitReady(t, 2*time.Minute)
}

func (c *pgCluster) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	wait.For(t, d, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.URL())
		if err != nil {
			return fmt.Errorf("test PostgreSQL on port %d not answering: %w\n%s", c.port, err, c.log())
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	})
}

func (c *pgCluster) log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// command runs a PostgreSQL binary, as the postgres user when we are root.
func (c *pgCluster) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (c *pgCluster) run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := c.command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s\n%s", name, args, err, out, c.log())
	}
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}
