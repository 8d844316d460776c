package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/config"
)

// Gateway is one gateway replica. Replicas share nothing but NATS (the
// sessions and requests buckets, the callback subjects) and the server.
type Gateway struct {
	cfg      config.Gateway
	log      *slog.Logger
	nats     *bus.Conn
	sessions jetstream.KeyValue // session cache: hash of the token → auth.Principal (JSON)
	requests jetstream.KeyValue // pending execute-and-wait requests by request id
	upstream *http.Client       // to the server (cfg.ServerURL)
	mux      *http.ServeMux
}

// New connects to NATS, makes the buckets if missing and registers every
// route (coreRoutes: login, proxy, ingress, UI; liveRoutes: SSE, execute
// and wait, callbacks).
func New(ctx context.Context, cfg config.Gateway, log *slog.Logger) (*Gateway, error) {
	return nil, errors.New("gateway: not built yet")
}

// Handler is the gateway's HTTP handler, CORS included.
func (g *Gateway) Handler() http.Handler { return g.mux }

// Run serves on cfg.Addr until ctx ends, then shuts down gracefully.
func (g *Gateway) Run(ctx context.Context) error { return errors.New("gateway: not built yet") }

// authed wraps h so it runs only for a caller whose session or token the
// access admits; the principal is in the request's context (auth.FromContext).
func (g *Gateway) authed(access auth.Access, h http.HandlerFunc) http.HandlerFunc {
	_ = access
	return h
}
