package pgdriver

import (
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// The connection pool is where a saturated store shows first: a request
// that waits for a connection is slow before PostgreSQL itself is. These
// metrics sum every open driver of the process (one, outside tests).
var (
	poolConns = prometheus.NewDesc("millrace_db_pool_connections",
		"Event-store connections in the pool by state: acquired (in a transaction or query), idle, constructing.",
		[]string{"state"}, nil)
	poolMax = prometheus.NewDesc("millrace_db_pool_max_connections",
		"The pool's cap on event-store connections (pool_max_conns in DATABASE_URL, or the default).",
		nil, nil)
	poolAcquires = prometheus.NewDesc("millrace_db_pool_acquires_total",
		"Connections taken from the pool.", nil, nil)
	poolWaited = prometheus.NewDesc("millrace_db_pool_waited_acquires_total",
		"Acquires that found no idle connection and had to wait for one (or for a new one to connect).", nil, nil)
	poolWaitSeconds = prometheus.NewDesc("millrace_db_pool_acquire_wait_seconds_total",
		"Time spent waiting for a pool connection; its rate over the acquire rate is the mean wait.", nil, nil)
	poolCancelled = prometheus.NewDesc("millrace_db_pool_cancelled_acquires_total",
		"Acquires given up because the request's context ended first: the pool was too small or the store too slow.", nil, nil)
)

// openPools is the set the collector reads; Open adds, Close removes.
var openPools = struct {
	sync.Mutex
	m map[*pgxpool.Pool]struct{}
}{m: map[*pgxpool.Pool]struct{}{}}

func init() { prometheus.MustRegister(poolCollector{}) }

func trackPool(p *pgxpool.Pool) {
	openPools.Lock()
	openPools.m[p] = struct{}{}
	openPools.Unlock()
}

func untrackPool(p *pgxpool.Pool) {
	openPools.Lock()
	delete(openPools.m, p)
	openPools.Unlock()
}

type poolCollector struct{}

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConns, poolMax, poolAcquires, poolWaited, poolWaitSeconds, poolCancelled} {
		ch <- d
	}
}

func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	var acquired, idle, constructing, max, acquires, waited, cancelled int64
	var wait float64
	openPools.Lock()
	for p := range openPools.m {
		s := p.Stat()
		acquired += int64(s.AcquiredConns())
		idle += int64(s.IdleConns())
		constructing += int64(s.ConstructingConns())
		max += int64(s.MaxConns())
		acquires += s.AcquireCount()
		waited += s.EmptyAcquireCount()
		cancelled += s.CanceledAcquireCount()
		wait += s.AcquireDuration().Seconds()
	}
	openPools.Unlock()
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(idle), "idle")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(constructing), "constructing")
	ch <- prometheus.MustNewConstMetric(poolMax, prometheus.GaugeValue, float64(max))
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(acquires))
	ch <- prometheus.MustNewConstMetric(poolWaited, prometheus.CounterValue, float64(waited))
	ch <- prometheus.MustNewConstMetric(poolCancelled, prometheus.CounterValue, float64(cancelled))
	ch <- prometheus.MustNewConstMetric(poolWaitSeconds, prometheus.CounterValue, wait)
}
