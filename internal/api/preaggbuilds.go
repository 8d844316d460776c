package api

// The pre-aggregate worker's build protocol bodies (snake_case, like the
// warehouse worker's) and replies.

// BuildWorker is the body of the build claim and heartbeat
// (POST /api/v2/internal/preaggregates/builds/{uuid}/claim, .../heartbeat).
type BuildWorker struct {
	WorkerID string `json:"worker_id"`
}

// BuildCompleteRequest is the body of
// POST /api/v2/internal/preaggregates/builds/{uuid}/complete.
type BuildCompleteRequest struct {
	WorkerID string `json:"worker_id"`
	BuildComplete
}

// BuildFailRequest is the body of
// POST /api/v2/internal/preaggregates/builds/{uuid}/fail.
type BuildFailRequest struct {
	WorkerID string `json:"worker_id"`
	Error    string `json:"error"`
}

// BuildAck is the reply of the build heartbeat, complete and fail: the
// build's status afterwards (complete: active, or failed/superseded when
// it was not promoted, with the reason in Error).
type BuildAck struct {
	BuildUUID string      `json:"buildUuid"`
	Status    BuildStatus `json:"status"`
	Error     string      `json:"error,omitempty"`
}
