// Package servertest starts an in-process Millrace server (SQLite in memory)
// against an embedded NATS server with stream, subject and consumer names of
// its own, for tests of the server and of its clients.
package servertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
)

// Harness is a running server and a raw NATS connection to inspect it.
type Harness struct {
	Cfg  config.Server
	NATS *bus.Embedded
	Srv  *server.Server
	API  *client.Client
	NC   *nats.Conn
	JS   jetstream.JetStream
}

var seq atomic.Int64

// Start runs a server until the test ends. mod may adjust the
// configuration (defaults, an in-memory SQLite store, 127.0.0.1:0, a fresh
// random MILLRACE_SECRET_KEY) first; clear SecretKey to test a server
// without one.
func Start(t testing.TB, mod func(*config.Server)) *Harness {
	t.Helper()
	return start(t, mod, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// StartWithLog is Start with the server's log, from debug level up, written
// to w (which must be safe for concurrent use), for tests that check what
// the server logs.
func StartWithLog(t testing.TB, mod func(*config.Server), w io.Writer) *Harness {
	t.Helper()
	return start(t, mod, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// Config is the configuration Start gives a server: the defaults, with an
// embedded NATS (shut down when the test ends) and streams of its own, an
// in-memory SQLite store, a loopback address on a free port and a random
// MILLRACE_SECRET_KEY. It is for tests that run a server themselves.
func Config(t testing.TB) config.Server {
	t.Helper()
	cfg, _ := newConfig(t)
	return cfg
}

func newConfig(t testing.TB) (config.Server, *bus.Embedded) {
	t.Helper()
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	var cfg config.Server
	config.ServerSet(&cfg) // defaults
	id := fmt.Sprintf("%d_%d", time.Now().UnixNano(), seq.Add(1))
	cfg.NATS.URL = emb.URL()
	cfg.NATS.Stream = "S" + id
	cfg.NATS.Subject = "s" + id + ".commands"
	cfg.NATS.Consumer = "pool" + id
	cfg.DatabaseURL = "sqlite::memory:"
	cfg.PreAgg.Dir = t.TempDir() // materializations of the in-process path
	cfg.Addr = "127.0.0.1:0"
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	cfg.SecretKey = hex.EncodeToString(key)
	// Off unless a test turns it on (WithAuth): most tests are about
	// something else.
	cfg.Auth.Mode = config.AuthNone
	return cfg, emb
}

func start(t testing.TB, mod func(*config.Server), log *slog.Logger) *Harness {
	t.Helper()
	cfg, emb := newConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	srv, err := server.New(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	// Not t.Context(): the server stops in its cleanup, after the cleanups
	// registered later (workers, clients) have run.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	nc, err := nats.Connect(emb.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &Harness{Cfg: cfg, NATS: emb, Srv: srv, API: client.New(srv.URL()), NC: nc, JS: js}
}

// WithAuth turns authentication on (MILLRACE_AUTH=tokens) and then applies
// mods: servertest.Start(t, servertest.WithAuth()). Make tokens with
// Harness.Token.
func WithAuth(mods ...func(*config.Server)) func(*config.Server) {
	return func(c *config.Server) {
		c.Auth.Mode = config.AuthTokens
		for _, m := range mods {
			if m != nil {
				m(c)
			}
		}
	}
}

// Token makes an API token of role in the server's store and returns its
// secret (send it as Authorization: Bearer).
func (h *Harness) Token(t testing.TB, role string) string {
	t.Helper()
	tok, err := auth.CreateToken(t.Context(), h.Srv.Store(), h.Srv.IDs(), role, fmt.Sprintf("test-%s-%d", role, seq.Add(1)), "servertest", nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Secret
}

// Consumer returns the current state of the worker pool's consumer.
func (h *Harness) Consumer(t testing.TB) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := h.JS.Consumer(t.Context(), h.Cfg.NATS.Stream, h.Cfg.NATS.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ci
}
