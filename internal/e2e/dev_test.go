package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/proctest"
)

// With NATS_URL set, dev mode uses that NATS server instead of starting an
// embedded one, and says so; its API listens on loopback unless told
// otherwise.
func TestDevUsesNATSURL(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{db: "none"}) // NATS_URL points at the cluster's NATS
	stream := ""
	for _, kv := range c.env {
		if v, ok := strings.CutPrefix(kv, "NATS_STREAM="); ok {
			stream = v
		}
	}
	if help, code := c.runCLI("dev", "--help"); code != 0 || !strings.Contains(help, "127.0.0.1:8082") || !strings.Contains(help, "NATS_URL") {
		t.Fatalf("dev --help (exit %d) should show the loopback default address and NATS_URL:\n%s", code, help)
	}
	addr := proctest.FreeAddr(t)
	p := c.start("dev", "dev", "--data-dir", t.TempDir(), "--addr", addr, "--workers", "1")
	c.url = "http://" + addr
	c.api = client.New(c.url)
	c.waitHealthy(p)
	if !strings.Contains(p.Output(), "no embedded NATS") {
		t.Errorf("dev does not say it uses the NATS from NATS_URL:\n%s", p.Output())
	}
	nc, err := nats.Connect(c.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, stream); err != nil {
		t.Fatalf("dev did not create its stream %s on the NATS of NATS_URL: %v", stream, err)
	}
	p.Signal(syscall.SIGTERM)
	checkCleanExit(t, p, 30*time.Second)
}
