package flow

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Counters are process-wide; with several servers, sum them in Prometheus.
var (
	mExecStarted    = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_executions_started_total", Help: "Executions started."})
	mExecCompleted  = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_executions_completed_total", Help: "Executions that completed."})
	mExecFailed     = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_executions_failed_total", Help: "Executions that failed."})
	mCmdIssued      = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_commands_issued_total", Help: "command.issued events written."})
	mCmdClaimed     = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_commands_claimed_total", Help: "Successful claims (each attempt counts)."})
	mClaimConflicts = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_claim_conflicts_total", Help: "Claims refused with 409 (duplicate notifications, live leases, ended commands)."})
	mClaimNotYours  = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_claim_not_yours_total", Help: "Heartbeats, reports and releases refused with 403 claim_not_yours: the holder's worker and attempt sent with another worker token."})
	mCmdCompleted   = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_commands_completed_total", Help: "command.completed events recorded."})
	mCmdFailed      = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_commands_failed_total", Help: "command.failed events recorded."})
	mRepublished    = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_commands_republished_total", Help: "Notifications re-enqueued for unclaimed commands or expired leases."})
)
