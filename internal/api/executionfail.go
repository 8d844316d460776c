package api

// ExecutionFailRequest is the body of POST /api/executions/{id}/fail.
type ExecutionFailRequest struct {
	// Reason is kept in the execution's error and its playbook.failed
	// event; required, at most 4096 bytes.
	Reason string `json:"reason"`
}
