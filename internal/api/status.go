package api

import (
	"errors"
	"fmt"
)

// ExecStatus is an execution's status.
type ExecStatus string

// Execution statuses. An execution runs until it completes, fails or is
// cancelled.
const (
	ExecRunning   ExecStatus = "running"
	ExecCompleted ExecStatus = "completed"
	ExecFailed    ExecStatus = "failed"
	ExecCancelled ExecStatus = "cancelled"
)

// Terminal reports whether s is final.
func (s ExecStatus) Terminal() bool { return s != ExecRunning }

// CommandStatus is a command's status.
type CommandStatus string

// Command statuses. A command moves issued -> claimed -> running -> completed
// or failed; cancelled can happen from any non-terminal status. An expired
// lease on a claimed or running command makes it claimable again.
const (
	CmdIssued    CommandStatus = "issued"
	CmdClaimed   CommandStatus = "claimed"
	CmdRunning   CommandStatus = "running"
	CmdCompleted CommandStatus = "completed"
	CmdFailed    CommandStatus = "failed"
	CmdCancelled CommandStatus = "cancelled"
)

// Terminal reports whether s is final.
func (s CommandStatus) Terminal() bool {
	return s == CmdCompleted || s == CmdFailed || s == CmdCancelled
}

// LoopStatus is the status of one run of a looping step.
type LoopStatus string

// Loop statuses.
const (
	LoopRunning LoopStatus = "running"
	LoopDone    LoopStatus = "done"
	LoopFailed  LoopStatus = "failed"
)

// QueryStatus is a warehouse query's status.
type QueryStatus string

// Query statuses (the Lightdash contract). Every change is a compare-and-set
// from an expected status, so a late result can never overwrite a cancel.
const (
	QueryPending   QueryStatus = "pending"
	QueryQueued    QueryStatus = "queued"    // only on the NATS path
	QueryExecuting QueryStatus = "executing" // only on the NATS path
	QueryReady     QueryStatus = "ready"
	QueryError     QueryStatus = "error"
	QueryCancelled QueryStatus = "cancelled"
	QueryExpired   QueryStatus = "expired"
)

// Terminal reports whether s is final.
func (s QueryStatus) Terminal() bool {
	switch s {
	case QueryReady, QueryError, QueryCancelled, QueryExpired:
		return true
	}
	return false
}

// Valid reports whether s is one of the Query* statuses.
func (s QueryStatus) Valid() bool {
	switch s {
	case QueryPending, QueryQueued, QueryExecuting, QueryReady, QueryError, QueryCancelled, QueryExpired:
		return true
	}
	return false
}

// CheckQueryTransition rejects a typo in a status before it reaches a
// driver: an unknown `to` would strand the query, an unknown `from` never
// matches.
func CheckQueryTransition(from []QueryStatus, to QueryStatus) error {
	if len(from) == 0 {
		return errors.New("no expected status given")
	}
	for _, s := range from {
		if !s.Valid() {
			return fmt.Errorf("unknown expected query status %q", s)
		}
	}
	if !to.Valid() {
		return fmt.Errorf("unknown query status %q", to)
	}
	return nil
}
