package client

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// refuse answers the first n requests with status and the given code, then
// 200 with {}; it counts every request.
func refuse(t *testing.T, n int64, status int, code, retryAfter string) (*Client, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= n {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"error":{"code":"` + code + `","message":"later"}}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	c.Retry = Retry{Min: time.Millisecond, Max: 10 * time.Millisecond, MaxElapsed: time.Minute}
	return c, &calls
}

func TestRetriesOverloadedForEveryRequest(t *testing.T) {
	t.Parallel()
	c, calls := refuse(t, 3, http.StatusTooManyRequests, "overloaded", "")
	if _, err := c.Execute(t.Context(), "p", 0, nil); err != nil {
		t.Fatalf("a submit refused with 429 three times: %v", err)
	}
	if calls.Load() != 4 {
		t.Fatalf("%d requests, want 4", calls.Load())
	}
}

func TestRetriesUnavailableReadsAndWorkerReports(t *testing.T) {
	t.Parallel()
	c, calls := refuse(t, 2, http.StatusServiceUnavailable, "unavailable", "")
	if _, err := c.Execution(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	c2, calls2 := refuse(t, 2, http.StatusServiceUnavailable, "unavailable", "")
	if _, _, err := c2.ReportBatch(t.Context(), []api.Report{}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 || calls2.Load() != 3 {
		t.Fatalf("requests %d and %d, want 3 each", calls.Load(), calls2.Load())
	}
}

// A submit without an Idempotency-Key may have committed before the 503:
// it is not retried. With a key it is.
func TestSubmitRetriedOnlyWithAKey(t *testing.T) {
	t.Parallel()
	c, calls := refuse(t, 1, http.StatusServiceUnavailable, "unavailable", "")
	if err := c.do(t.Context(), "POST", "/api/execute", api.ExecuteRequest{Path: "p"}, nil); StatusOf(err) != http.StatusServiceUnavailable || calls.Load() != 1 {
		t.Fatalf("a keyless submit: %v after %d requests; want the 503 after 1", err, calls.Load())
	}
	c, calls = refuse(t, 1, http.StatusServiceUnavailable, "unavailable", "")
	h := http.Header{IdempotencyHeader: {"k1"}}
	if err := c.send(t.Context(), "POST", "/api/execute", "application/json", h, bytes.NewReader([]byte(`{}`)), nil); err != nil || calls.Load() != 2 {
		t.Fatalf("a keyed submit: %v after %d requests; want success after 2", err, calls.Load())
	}
	// Execute sends a key of its own: retried.
	c, calls = refuse(t, 1, http.StatusServiceUnavailable, "unavailable", "")
	if _, err := c.Execute(t.Context(), "p", 0, nil); err != nil || calls.Load() != 2 {
		t.Fatalf("Execute: %v after %d requests; want success after 2", err, calls.Load())
	}
}

// Health's 503 is its answer, and a 503 that is not an outage (no secret
// key) will not pass by waiting.
func TestNoRetryForHealthOrOtherRefusals(t *testing.T) {
	t.Parallel()
	c, calls := refuse(t, 1, http.StatusServiceUnavailable, "unavailable", "")
	if _, err := c.Health(t.Context()); err == nil || calls.Load() != 1 {
		t.Fatalf("health: %v after %d requests", err, calls.Load())
	}
	c, calls = refuse(t, 1, http.StatusServiceUnavailable, "secret_key_missing", "")
	if _, err := c.Execution(t.Context(), 1); err == nil || calls.Load() != 1 {
		t.Fatalf("secret_key_missing: %v after %d requests", err, calls.Load())
	}
}

func TestRetryHonoursRetryAfterAndGivesUp(t *testing.T) {
	t.Parallel()
	c, _ := refuse(t, 1, http.StatusTooManyRequests, "overloaded", "1")
	began := time.Now()
	if _, err := c.Execution(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d < time.Second {
		t.Fatalf("retried after %s; the server asked for Retry-After: 1", d)
	}
	c, calls := refuse(t, 1<<30, http.StatusServiceUnavailable, "unavailable", "")
	c.Retry.MaxElapsed = 200 * time.Millisecond
	if _, err := c.Execution(t.Context(), 1); StatusOf(err) != http.StatusServiceUnavailable || calls.Load() < 2 {
		t.Fatalf("past MaxElapsed: %v after %d requests; want the 503 after some retries", err, calls.Load())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	c.Retry.MaxElapsed = time.Hour
	if _, err := c.Execution(ctx, 1); err == nil {
		t.Fatal("a request whose context ended kept retrying to success")
	}
}

// A refused dial (a server restarting) is retried even for a keyless
// submit: the server saw nothing.
func TestRetriesARefusedDial(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now: dials are refused
	c := New("http://" + addr)
	c.Retry = Retry{Min: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: 200 * time.Millisecond}
	var calls atomic.Int64
	c.HTTP.Transport = countTrips{next: c.HTTP.Transport, n: &calls}
	if _, err := c.Execute(t.Context(), "p", 0, nil); err == nil || !dialFailed(err) {
		t.Fatalf("a refused dial: %v; want the dial error", err)
	}
	if calls.Load() < 2 {
		t.Fatalf("%d attempts; a refused dial is retried", calls.Load())
	}
}

type countTrips struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countTrips) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// An attempt that outlives the HTTP client's own timeout is retried when
// safe (a keyed submit), and the same key goes again; the caller's own
// deadline is never outlived.
func TestSlowAttemptRetriedWithItsKey(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	keys := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys <- r.Header.Get(IdempotencyHeader)
		if calls.Add(1) == 1 {
			select { // slower than the client's timeout
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		_, _ = w.Write([]byte(`{"execution_id":7,"status":"running"}`))
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL)
	c.HTTP.Timeout = 200 * time.Millisecond
	c.Retry = Retry{Min: time.Millisecond, Max: 10 * time.Millisecond, MaxElapsed: time.Minute}
	if _, err := c.Execute(t.Context(), "p", 0, nil); err != nil {
		t.Fatalf("a keyed submit whose first attempt timed out: %v", err)
	}
	if k1, k2 := <-keys, <-keys; calls.Load() != 2 || k1 == "" || k1 != k2 {
		t.Fatalf("%d requests with keys %q, %q; want 2 with one key", calls.Load(), k1, k2)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	calls.Store(0)
	if _, err := c.Execution(ctx, 1); err == nil {
		t.Fatal("a read past its caller's deadline succeeded")
	}
}
