package store

import (
	"context"
	"math"
	"time"

	"github.com/millrace/millrace/internal/ids"
)

// The invariant checks a Verifier runs (`millrace verify`). Each reads the
// store as it is; run them on a quiet store (after an incident, or once a
// test's executions all ended): a write in flight can look like a
// violation for the instant between its statements only if it spans
// transactions, and every check below is about one transaction's writes.
const (
	// CheckCompletedOnce: a command has at most one command.completed.
	CheckCompletedOnce = "command_completed_once"
	// CheckTerminalEvent: a terminal execution has its terminal event
	// (playbook.completed, playbook.failed or execution.cancelled), and an
	// execution with a terminal event is terminal.
	CheckTerminalEvent = "terminal_event"
	// CheckExecutionProjection: an execution's status is what its last
	// terminal event says, and it has at most one terminal event.
	CheckExecutionProjection = "execution_projection"
	// CheckCommandProjection: a command's status agrees with its terminal
	// events: completed has a command.completed, failed a command.failed
	// (and no completion), any other status neither.
	CheckCommandProjection = "command_projection"
	// CheckLoopProjection: a loop agrees with its iteration commands: a
	// done loop has a completed latest command for each of its Total
	// indexes and nothing in flight; a running loop of a running
	// execution is not already complete; no iteration index is outside
	// [0, Total).
	CheckLoopProjection = "loop_projection"
	// CheckOutboxOrphan: an outbox row's owner (the command, query or
	// pre-aggregate build its Nats-Msg-Id names) exists and is still
	// waiting for a worker.
	CheckOutboxOrphan = "outbox_orphan"
	// CheckNotification: a live command of a running execution has no
	// notification pending for longer than the reaper interval past when
	// it became due (the relay is not publishing it).
	CheckNotification = "notification_pending"
)

// VerifyChecks lists every check in the order `millrace verify` runs them.
var VerifyChecks = []string{
	CheckCompletedOnce, CheckTerminalEvent, CheckExecutionProjection, CheckCommandProjection,
	CheckLoopProjection, CheckOutboxOrphan, CheckNotification,
}

// Violation is one broken invariant. ExecutionID and CommandID (the
// command's event id, its key) are 0 when they do not apply.
type Violation struct {
	Check       string
	ExecutionID int64
	CommandID   int64
	Detail      string
}

// VerifyOptions narrows the checks.
type VerifyOptions struct {
	// Since: only executions started at or after it (zero: all). The rows
	// that belong to no execution (outbox rows of queries and builds) are
	// checked whatever it is.
	Since time.Time
	// Now is the reference time of CheckNotification.
	Now time.Time
	// ReapInterval is how long a due notification may stay pending.
	ReapInterval time.Duration
	// Limit caps the violations one check returns (0: no cap); a check
	// that hit it may have more.
	Limit int
}

// Verifier is the read-only side of `millrace verify`, implemented by both
// drivers (no Tx: it runs on a quiet store and writes nothing). Each check
// aggregates in SQL, so memory stays bounded by Limit, not by the history.
type Verifier interface {
	// VerifyCheck runs one of VerifyChecks and returns its violations,
	// by execution id.
	VerifyCheck(ctx context.Context, check string, opts VerifyOptions) ([]Violation, error)
	// VerifyCounts counts what the checks read under opts: keys
	// "executions", "commands", "events", "loops", "outbox".
	VerifyCounts(ctx context.Context, opts VerifyOptions) (map[string]int64, error)
}

// VerifyCountsSQL is VerifyCounts' statement in both drivers; $1 is
// VerifyOptions.MinExecution.
const VerifyCountsSQL = `SELECT
		(SELECT count(*) FROM executions WHERE execution_id >= $1),
		(SELECT count(*) FROM commands WHERE execution_id >= $1),
		(SELECT count(*) FROM events WHERE execution_id >= $1),
		(SELECT count(*) FROM loops WHERE execution_id >= $1),
		(SELECT count(*) FROM outbox)`

// MinExecution is the lowest execution id started at or after Since (0:
// every execution): ids are time-ordered, so Since is an index range.
func (o VerifyOptions) MinExecution() int64 {
	if o.Since.IsZero() {
		return 0
	}
	return ids.Floor(o.Since)
}

// CheckArgs are a check statement's arguments in both drivers: $1 the
// execution floor, $2 the row limit (no cap: the largest int64) and, for
// CheckNotification, $3 the cutoff, which the driver encodes with at.
func (o VerifyOptions) CheckArgs(check string, at func(time.Time) any) []any {
	limit := int64(o.Limit)
	if limit <= 0 {
		limit = math.MaxInt64
	}
	args := []any{o.MinExecution(), limit}
	if check == CheckNotification {
		args = append(args, at(o.Now.Add(-o.ReapInterval)))
	}
	return args
}

// Trim caps one check's violations at Limit: the notification check
// unions two parts limited each.
func (o VerifyOptions) Trim(vs []Violation) []Violation {
	if o.Limit > 0 && len(vs) > o.Limit {
		return vs[:o.Limit]
	}
	return vs
}
