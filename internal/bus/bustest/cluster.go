// Package bustest runs NATS topologies for tests that one embedded server
// (bus.StartEmbedded) cannot stand for: a JetStream cluster of in-process
// nats-servers joined by routes, as nats-server's own tests build them.
// It also leaves a stream in a known state for the tests of its reports.
package bustest

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/millrace/millrace/internal/wait"
)

// ClusterReadyTimeout bounds how long StartCluster waits for the servers
// to route to each other and elect a JetStream meta leader. Elections take
// a few seconds; a busy CI machine needs more.
const ClusterReadyTimeout = 60 * time.Second

// Cluster is n JetStream servers on loopback, routed to each other.
type Cluster struct {
	// Servers are named n1, n2, ... in order.
	Servers []*server.Server
	opts    []*server.Options // each server's, for Restart
	log     *errorLog
}

// StartCluster starts an n-server JetStream cluster, each server with its
// own store under t.TempDir(), and waits until a meta leader is elected and
// knows every peer, so a stream with n replicas can be created at once. The
// servers shut down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	// Routes must name every server's cluster port before any starts, so
	// those ports are picked here; client ports are chosen by the servers.
	ports, err := freePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{log: &errorLog{}}
	t.Cleanup(c.shutdown)
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		opts := &server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   filepath.Join(t.TempDir(), name),
			// Limits for placement accounting, not allocations: Millrace's
			// command stream reserves its 1 GiB max_bytes on each replica.
			JetStreamMaxMemory: 8 << 30,
			JetStreamMaxStore:  8 << 30,
			Cluster:            server.ClusterOpts{Name: "millrace-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:             server.RoutesFromStr(strings.Join(routes, ",")),
			NoSigs:             true,
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("cluster server %s: %v", name, err)
		}
		srv.SetLogger(c.log.named(name), false, false)
		srv.Start()
		c.Servers = append(c.Servers, srv)
		c.opts = append(c.opts, opts)
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("cluster server %s did not accept connections within 10s; its errors: %s", name, c.log)
		}
		// A restart comes back on the same client port, so NATS_URL
		// stays right.
		opts.Port = srv.Addr().(*net.TCPAddr).Port
	}
	wait.For(t, ClusterReadyTimeout, func() error {
		leader := c.Leader()
		if leader == nil {
			return fmt.Errorf("no JetStream meta leader elected (server errors: %s)", c.log)
		}
		if peers := leader.JetStreamClusterPeers(); len(peers) != n {
			return fmt.Errorf("meta leader %s knows peers %v, want %d (server errors: %s)", leader.Name(), peers, n, c.log)
		}
		for _, s := range c.Servers {
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("server %s is not current with the meta leader yet", s.Name())
			}
		}
		return nil
	})
	return c
}

// URL lists every server's client URL, comma-separated, as NATS_URL takes
// them.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Leader is the JetStream meta leader, or nil during an election.
func (c *Cluster) Leader() *server.Server {
	for _, s := range c.Servers {
		if s.Running() && s.JetStreamIsLeader() {
			return s
		}
	}
	return nil
}

// StreamLeader is the server leading the stream (in the global account),
// or nil if none does yet.
func (c *Cluster) StreamLeader(stream string) *server.Server {
	for _, s := range c.Servers {
		if s.Running() && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return s
		}
	}
	return nil
}

func (c *Cluster) shutdown() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
	for _, s := range c.Servers {
		s.WaitForShutdown()
	}
}

// freePorts reserves n loopback ports by listening on them, then releases
// them all at once for the servers to take.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port for a cluster route: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// errorLog keeps the servers' last errors (a route port that could not be
// bound shows only there) for failure messages.
type errorLog struct {
	mu    sync.Mutex
	lines []string
}

const keptErrors = 20

func (e *errorLog) named(name string) server.Logger { return serverLog{e, name} }

func (e *errorLog) add(line string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines = append(e.lines, line)
	if len(e.lines) > keptErrors {
		e.lines = e.lines[len(e.lines)-keptErrors:]
	}
}

func (e *errorLog) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.lines) == 0 {
		return "none"
	}
	return strings.Join(e.lines, "; ")
}

type serverLog struct {
	e    *errorLog
	name string
}

func (l serverLog) Noticef(string, ...any) {}
func (l serverLog) Warnf(string, ...any)   {}
func (l serverLog) Debugf(string, ...any)  {}
func (l serverLog) Tracef(string, ...any)  {}
func (l serverLog) Errorf(format string, v ...any) {
	l.e.add(l.name + ": " + fmt.Sprintf(format, v...))
}
func (l serverLog) Fatalf(format string, v ...any) {
	l.e.add(l.name + ": fatal: " + fmt.Sprintf(format, v...))
}
