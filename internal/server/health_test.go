package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/ids"
)

// With the store down, health answers 503 with the same JSON shape as a
// healthy reply, not an error envelope: probes read the reason from it.
func TestHealthStoreDownIs503(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fl := flow.New(nil, ids.New(1), flow.Config{}, nil, log, nil)
	down := func(context.Context) api.Health {
		return api.Health{Status: "degraded", Store: "down: connection refused", NATS: "ok"}
	}
	a := NewAPI(fl, log, 1<<10, down)
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil))
	var h api.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if rec.Code != http.StatusServiceUnavailable || h.Store != "down: connection refused" || h.Status != "degraded" {
		t.Fatalf("health = %d %+v; want 503 with the store's reason", rec.Code, h)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}
