package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/millrace/millrace/internal/backoff"
)

// Retry is how the client retries a request the server refused for now
// (429 overloaded, 503 unavailable, 502 from a gateway) or could not be
// reached for: jittered exponential delays from Min to Max (package
// backoff), at least the reply's Retry-After, until MaxElapsed has passed
// since the first attempt or the request's context ends. MaxElapsed 0
// turns retrying off.
type Retry struct {
	Min, Max   time.Duration
	MaxElapsed time.Duration
}

// DefaultRetry rides out a PostgreSQL restart or a server restart (tens of
// seconds) and an overload burst.
var DefaultRetry = Retry{Min: 100 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: 2 * time.Minute}

// IdempotencyHeader is the header that makes a submit safe to retry: the
// server returns the first execution for a repeated key.
const IdempotencyHeader = "Idempotency-Key"

// safeToRetry: a request the server may see twice without harm. Reads
// (but health: its 503 is the answer), anything with an Idempotency-Key,
// and the worker protocol, which the server dedupes by command, attempt
// and worker (claims, heartbeats, reports, releases; queries' and builds'
// the same). A plain submit is not: its commit may have happened before
// the connection broke.
func safeToRetry(req *http.Request) bool {
	switch {
	case strings.HasPrefix(req.URL.Path, "/api/health"):
		return false
	case req.Method == http.MethodGet || req.Method == http.MethodHead:
		return true
	case req.Header.Get(IdempotencyHeader) != "":
		return true
	}
	p := req.URL.Path
	switch {
	case p == "/api/events", p == "/api/events/batch", p == "/api/commands/claim":
		return true
	case strings.HasPrefix(p, "/api/commands/") && (strings.HasSuffix(p, "/claim") || strings.HasSuffix(p, "/release")):
		return true
	case strings.HasPrefix(p, "/api/v2/internal/"):
		return !strings.HasSuffix(p, "/results") // an upload's body streams once
	}
	return false
}

// retryable says whether the outcome of one attempt is worth another, and
// the least wait the server asked for. A 429 is refused before any work,
// so it is retried for every request; a dial that failed sent nothing.
func retryable(req *http.Request, resp *http.Response, apiErr *Error, err error) (bool, time.Duration) {
	if err != nil {
		if dialFailed(err) {
			return true, 0
		}
		return safeToRetry(req) && (brokenConn(err) || attemptTimedOut(req, err)), 0
	}
	after := retryAfter(resp)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return true, after
	case resp.StatusCode == http.StatusServiceUnavailable && apiErr != nil && (apiErr.Code == "unavailable" || apiErr.Code == "http"),
		resp.StatusCode == http.StatusBadGateway && apiErr != nil && (apiErr.Code == "upstream_unavailable" || apiErr.Code == "http"):
		return safeToRetry(req), after
	}
	return false, 0
}

// dialFailed: the connection was never made (refused, no route), so the
// server saw nothing.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// brokenConn: the connection broke around the request (reset, closed by a
// restarting server); whether the server acted on it is unknown.
func brokenConn(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "EOF") || errors.As(err, &ne)
}

// attemptTimedOut: this attempt ran out of the HTTP client's own timeout
// while the caller's context still has time; like a broken connection, the
// server may or may not have acted, so only a safe request tries again.
func attemptTimedOut(req *http.Request, err error) bool {
	var ne net.Error
	return req.Context().Err() == nil && errors.As(err, &ne) && ne.Timeout()
}

// retryAfter reads Retry-After in seconds (the only form Millrace sends),
// capped so that a wrong header cannot park a client.
func retryAfter(resp *http.Response) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || s <= 0 {
		return 0
	}
	return min(time.Duration(s)*time.Second, 30*time.Second)
}

// wait sleeps before attempt n+1: the jittered backoff, at least after
// (itself jittered up to a fifth more, so the clients a 429 turned away
// together do not come back together). It reports false when the budget
// or ctx is spent.
func (r Retry) wait(ctx context.Context, b *backoff.Backoff, began time.Time, after time.Duration) bool {
	d := b.Next()
	if after > 0 {
		d = max(d, after+rand.N(after/5+1))
	}
	if time.Since(began)+d > r.MaxElapsed {
		return false
	}
	return backoff.Sleep(ctx, d)
}

// Temporary reports whether err may pass by waiting: the server was not
// reached (status 0), shed the request (429) or failed on its side (5xx).
// Any other 4xx is a refusal that a retry meets again.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	st := StatusOf(err)
	return st == 0 || st == http.StatusTooManyRequests || st >= 500
}
