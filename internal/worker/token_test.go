package worker_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/worker"
)

// A worker's start-up check: a worker token passes, a refused or missing
// one and a token of another role fail with what to do, auth off passes,
// and a server not up yet does not stop the worker.
func TestCheckToken(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.Header.Get("Authorization") {
		case "Bearer mrt_worker":
			_, _ = w.Write([]byte(`{"token_id": 1, "kind": "api", "role": "worker", "user": {"user_id": "token:1", "roles": ["worker"]}}`))
		case "Bearer mrt_operator":
			_, _ = w.Write([]byte(`{"token_id": 2, "kind": "api", "role": "operator", "user": {"user_id": "token:2", "roles": ["operator"]}}`))
		default:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error": {"code": "unauthenticated", "message": "a valid token is needed"}}`))
		}
	}))
	defer srv.Close()
	open := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"token_id": 0, "kind": "", "role": "admin", "user": {"user_id": "anonymous", "roles": ["admin"]}, "auth_disabled": true}`))
	}))
	defer open.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))

	for _, c := range []struct {
		name, url, token, wantErr string
	}{
		{"worker token", srv.URL, "mrt_worker", ""},
		{"revoked or unknown", srv.URL, "mrt_gone", "not accepted by the server"},
		{"no token", srv.URL, "", "needs a token: set MILLRACE_WORKER_TOKEN"},
		{"wrong role", srv.URL, "mrt_operator", "role operator"},
		{"auth off", open.URL, "", ""},
		{"server not up yet", deadURL, "mrt_worker", ""},
	} {
		err := worker.CheckToken(t.Context(), c.url, c.token, log)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: err %v, want %q", c.name, err, c.wantErr)
		case c.wantErr != "" && !strings.Contains(err.Error(), "millrace token create --role worker"):
			t.Errorf("%s: %v does not say how to make a worker token", c.name, err)
		}
	}
}
