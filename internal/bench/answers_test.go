package bench

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
)

// A submit shed with 429 is retried and each answer counted; a 500 is
// counted and that execution left out, and the benchmark goes on.
func TestSubmitCountsEveryAnswer(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1, 2:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"code":"overloaded","message":"later"}}`))
		case 3:
			_, _ = w.Write([]byte(`{"execution_id": 7}`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":{"code":"internal","message":"bug"}}`))
		}
	}))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL)
	c.Retry = client.Retry{}
	var a answerCount
	reg := api.Registered{Path: "p", Version: 1}
	if st, ok := submitOne(t.Context(), c, reg, &a); !ok || st.ExecutionID != 7 {
		t.Fatalf("submit after two 429s = %+v, %v", st, ok)
	}
	if _, ok := submitOne(t.Context(), c, reg, &a); ok {
		t.Fatal("a 500 counted as accepted")
	}
	got := a.snapshot()
	if got["429"] != 2 || got["200"] != 1 || got["500"] != 1 || len(got) != 3 {
		t.Fatalf("answers %v; want 429: 2, 200: 1, 500: 1", got)
	}
	var b bytes.Buffer
	r := &Result{Answers: got}
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "200: 1, 429: 2 (shed, retried), 500: 1") {
		t.Fatalf("table has no answers line:\n%s", b.String())
	}
}
