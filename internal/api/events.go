package api

// Event types recorded in the event log (GET /api/executions/{id}/events)
// and reported by workers (POST /api/events). docs/api.md lists them.
const (
	// The backbone: an execution and the commands it issues.
	EvPlaybookStarted   = "playbook.started"
	EvPlaybookCompleted = "playbook.completed"
	EvPlaybookFailed    = "playbook.failed"
	EvExecCancelled     = "execution.cancelled"
	EvCommandIssued     = "command.issued"
	EvCommandClaimed    = "command.claimed"
	EvCommandStarted    = "command.started"
	EvCommandHeartbeat  = "command.heartbeat"
	EvCommandCompleted  = "command.completed"
	EvCommandFailed     = "command.failed"
	EvStepExit          = "step.exit"

	// The language: retries, loops and `set`.
	EvRetryScheduled = "command.retry_scheduled"
	EvLoopStarted    = "loop.started"
	EvLoopDone       = "loop.done"
	EvLoopFailed     = "loop.failed"
	EvContextUpdated = "context.updated"
	// EvJoinArrived: an arc into a join fired; the join starts once no
	// branch that can still reach it is active (docs/playbooks.md).
	EvJoinArrived = "join.arrived"
)
