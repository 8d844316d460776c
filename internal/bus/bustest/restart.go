package bustest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/millrace/millrace/internal/wait"
)

// Kill shuts server i down (its clients see the connection drop; its
// store stays for Restart).
func (c *Cluster) Kill(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// Restart starts server i again, a stopped one (Kill) or a running one
// (stopped first), on its client and cluster ports with its store, and
// waits until it is current with the meta leader again.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	if c.Servers[i].Running() {
		c.Kill(i)
	}
	name := c.opts[i].ServerName
	srv, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		t.Fatalf("restart cluster server %s: %v", name, err)
	}
	srv.SetLogger(c.log.named(name), false, false)
	srv.Start()
	c.Servers[i] = srv
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatalf("restarted cluster server %s did not accept connections within 30s; its errors: %s", name, c.log)
	}
	wait.For(t, ClusterReadyTimeout, func() error {
		if !srv.JetStreamIsCurrent() {
			return fmt.Errorf("restarted server %s is not current with the meta leader yet (server errors: %s)", name, c.log)
		}
		return nil
	})
}

// Index is the position of s in Servers, or -1.
func (c *Cluster) Index(s *server.Server) int {
	for i, x := range c.Servers {
		if x == s {
			return i
		}
	}
	return -1
}
