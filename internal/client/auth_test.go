package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

// Every request a client makes carries its token, JSON calls and the raw
// result upload (a copy of the http.Client) alike; a client without one
// sends no Authorization header.
func TestTokenOnEveryRequest(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]string{} // "METHOD path" -> Authorization
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method+" "+r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/auth/whoami":
			_, _ = w.Write([]byte(`{"token_id": 9007199254740993, "kind": "api", "role": "worker", "user": {"user_id": "token:1", "roles": ["worker"]}}`))
		case "/api/tokens":
			_, _ = w.Write([]byte(`{"tokens": []}`))
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	c := client.New(srv.URL).WithToken("mrt_secret\n")
	who, err := c.WhoAmI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if who.Role != api.RoleWorker || who.TokenID != 9007199254740993 {
		t.Fatalf("whoami: %+v", who)
	}
	if _, err := c.TokenList(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryUpload(ctx, "q1", "w1", strings.NewReader("{}\n")); err != nil {
		t.Fatal(err)
	}
	anon := client.New(srv.URL)
	if _, err := anon.AuthConfig(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		"GET /api/auth/whoami":                     "Bearer mrt_secret",
		"GET /api/tokens":                          "Bearer mrt_secret",
		"POST /api/v2/internal/queries/q1/results": "Bearer mrt_secret",
		"GET /api/auth/config":                     "",
	}
	for k, v := range want {
		if got, ok := seen[k]; !ok || got != v {
			t.Errorf("%s: Authorization %q (seen %v), want %q", k, got, ok, v)
		}
	}
}

// A 401 comes back as the API's error, with its status and code.
func TestUnauthenticatedError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error": {"code": "unauthenticated", "message": "a valid API token is needed"}}`))
	}))
	defer srv.Close()
	_, err := client.New(srv.URL).WithToken("mrt_nope").TokenRevoke(context.Background(), "some name")
	if client.StatusOf(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("err = %v", err)
	}
}
