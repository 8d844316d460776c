package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/apierr"
)

// overloadRetryAfter is the Retry-After of a 429: a write holds its slot
// for milliseconds, so a second is plenty; clients add jitter on top.
const overloadRetryAfter = 1

var mShed = promauto.NewCounter(prometheus.CounterOpts{
	Name: "millrace_http_shed_total",
	Help: "Write requests answered 429 overloaded because MILLRACE_MAX_INFLIGHT_WRITES were already in flight.",
})

var mInflightWrites = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "millrace_http_inflight_writes",
	Help: "Write requests (every method but GET and HEAD) this server holds now; bounded by MILLRACE_MAX_INFLIGHT_WRITES.",
})

// shedder bounds the write requests one server holds at once. Past the
// bound a write is refused at once with 429 and Retry-After, never queued:
// a queue in front of a saturated store only grows memory and latency,
// while a refused client backs off (issue 15, item 5). Reads and health
// are never shed, so probes and operators still get answers.
type shedder struct {
	slots chan struct{}
	limit int
}

// newShedder returns a shedder of limit slots; limit <= 0 sheds nothing.
func newShedder(limit int) *shedder {
	if limit <= 0 {
		return nil
	}
	return &shedder{slots: make(chan struct{}, limit), limit: limit}
}

// WithMaxInflightWrites sets MILLRACE_MAX_INFLIGHT_WRITES (0: unbounded).
func WithMaxInflightWrites(n int) Option { return func(a *API) { a.shed = newShedder(n) } }

// wrap sheds h's writes past the bound.
func (s *shedder) wrap(h http.Handler) http.Handler {
	if s == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWrite(r) {
			h.ServeHTTP(w, r)
			return
		}
		select {
		case s.slots <- struct{}{}:
		default:
			mShed.Inc()
			writeErr(w, apierr.New(apierr.Overloaded, "the server holds MILLRACE_MAX_INFLIGHT_WRITES (%d) write requests already; retry after the Retry-After header's seconds", s.limit))
			return
		}
		mInflightWrites.Inc()
		defer func() { <-s.slots; mInflightWrites.Dec() }()
		h.ServeHTTP(w, r)
	})
}

// isWrite: every method but GET, HEAD and OPTIONS, except a worker's
// result upload, which streams for as long as the query's rows take and
// belongs to a query already claimed: refusing it would waste the run.
func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return !(strings.HasPrefix(r.URL.Path, "/api/v2/internal/queries/") && strings.HasSuffix(r.URL.Path, "/results"))
}

// retryAfter tells the client when a retryable refusal is worth trying
// again.
func retryAfter(w http.ResponseWriter, e *apierr.Error) {
	switch e.Code {
	case apierr.Overloaded:
		w.Header().Set("Retry-After", strconv.Itoa(overloadRetryAfter))
	case apierr.Unavailable:
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
}
