package builds

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	mTriggered = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "millrace_pre_aggregate_builds_triggered_total",
		Help: "Pre-aggregate builds queued, by trigger (manual, definition, cron, key_sql, partition, missing).",
	}, []string{"trigger"})
	mFinished = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "millrace_pre_aggregate_builds_finished_total",
		Help: "Pre-aggregate builds ended, by outcome (active, failed, superseded).",
	}, []string{"status"})
	mReaped = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "millrace_pre_aggregate_builds_reaped_total",
		Help: "Pre-aggregate builds the reaper re-notified (lost notification) or re-queued (worker stopped heartbeating).",
	}, []string{"action"})
)
