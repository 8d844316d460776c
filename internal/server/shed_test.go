package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/apierr"
)

// Past the bound a write is refused at once with 429 overloaded and
// Retry-After (never queued); reads and a worker's result upload pass;
// a freed slot takes a write again.
func TestShedderRefusesWritesPastTheBound(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	h := newShedder(2).wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/api/execute" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	}))
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/execute", nil))
			if rec.Code != http.StatusOK {
				t.Errorf("a write within the bound got %d", rec.Code)
			}
		}()
	}
	<-entered
	<-entered

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/execute", nil))
	var env apierr.Envelope
	if rec.Code != http.StatusTooManyRequests || json.Unmarshal(rec.Body.Bytes(), &env) != nil || env.Error.Code != apierr.Overloaded {
		t.Fatalf("the third write got %d %s; want 429 overloaded", rec.Code, rec.Body)
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/api/health", nil),
		httptest.NewRequest(http.MethodGet, "/api/executions/1", nil),
		httptest.NewRequest(http.MethodPost, "/api/v2/internal/queries/abc/results", nil),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			t.Errorf("%s %s was shed (%d)", r.Method, r.URL.Path, rec.Code)
		}
	}
	close(release)
	wg.Wait()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/events", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("a write after the slots freed got %d", rec.Code)
	}
}
