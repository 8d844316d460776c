package query

import (
	"crypto/rand"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	mSubmitted  = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_queries_submitted_total", Help: "Warehouse queries submitted (cache misses), by path and lane."}, []string{"path", "lane"})
	mCacheHits  = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_query_cache_hits_total", Help: "Queries answered from the results cache."})
	mFinished   = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_queries_finished_total", Help: "Queries that reached a final status, by status."}, []string{"status"})
	mPreAgg     = promauto.NewCounterVec(prometheus.CounterOpts{Name: "millrace_pre_aggregate_queries_total", Help: "Metric queries matched against pre-aggregates, by result (hit or miss) and the miss reason's code (empty for a hit)."}, []string{"result", "reason"})
	mRenotified = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_queries_renotified_total", Help: "Queued queries re-notified after their notification was presumed lost."})
)

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func itoa(n int) string { return strconv.Itoa(n) }
