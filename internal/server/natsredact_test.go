package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/wait"
)

// NATS credentials in NATS_URL reach no log line: not the "ready" line, not
// the connect line, not the disconnect and reconnect lines of an outage.
func TestServerLogsNoNATSCredentials(t *testing.T) {
	t.Parallel()
	const password = "Sup3r-secret-pw"
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1, User: "millrace", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	logs := &syncBuffer{}
	servertest.StartWithLog(t, func(c *config.Server) { c.NATS.URL = emb.URLWithCredentials() }, logs)
	wait.Until(t, 30*time.Second, "the server's ready and NATS connect lines", func() bool {
		s := logs.String()
		return strings.Contains(s, "millrace server ready") && strings.Contains(s, "connected to NATS")
	})
	// An outage logs the URL again, twice.
	if err := emb.Restart(); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the server to log the NATS outage and reconnect", func() bool {
		s := logs.String()
		return strings.Contains(s, "NATS disconnected") && strings.Contains(s, "reconnected to NATS")
	})
	out := logs.String()
	if strings.Contains(out, password) {
		t.Fatalf("the server's log shows the NATS password:\n%s", out)
	}
	// The URL is still there, with the password replaced, so an operator
	// can see where the server connects.
	if want := "millrace:***@" + strings.TrimPrefix(emb.URL(), "nats://"); !strings.Contains(out, want) {
		t.Errorf("the log never shows the redacted URL %q:\n%s", want, out)
	}
}
