package api

import (
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/playbook"
)

// CatalogEntry is one registered version of a playbook (GET /api/catalog,
// GET /api/catalog/{path}). Content is left out of lists.
type CatalogEntry struct {
	CatalogID int64     `json:"catalog_id"`
	Path      string    `json:"path"`
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Content   string    `json:"content,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// CatalogList is the reply of GET /api/catalog.
type CatalogList struct {
	Entries []CatalogEntry `json:"entries"`
}

// RegisterRequest is the body of POST /api/catalog/register.
type RegisterRequest struct {
	Content string `json:"content"` // the playbook YAML
	// File names where Content came from, so that problems point at the
	// user's file (file:line); "playbook.yaml" when empty.
	File string `json:"file,omitempty"`
}

// Registered is the reply of POST /api/catalog/register.
type Registered struct {
	Path      string `json:"path"`
	Version   int    `json:"version"`
	CatalogID int64  `json:"catalog_id"`
	// Warnings are what validation flagged without refusing the playbook
	// (an unreachable step), each with file:line and a hint.
	Warnings []playbook.Problem `json:"warnings,omitempty"`
}

// ExecuteRequest is the body of POST /api/execute.
type ExecuteRequest struct {
	Path    string         `json:"path"`
	Version int            `json:"version,omitempty"` // 0: the latest
	Payload map[string]any `json:"payload,omitempty"` // overrides the workload
	// ParentExecutionID is set by a `playbook` tool starting a child.
	ParentExecutionID int64 `json:"parent_execution_id,omitempty"`
	// ParentCommandID (the event id of the command running the tool) and
	// ParentTask (the task's key in its task list; 0 for a single tool)
	// key the child: a re-run of the command gets the child it started
	// instead of a second one. ParentAttempt is the attempt that starts it.
	ParentCommandID int64 `json:"parent_command_id,omitempty"`
	ParentTask      int   `json:"parent_task,omitempty"`
	ParentAttempt   int   `json:"parent_attempt,omitempty"`
}

// Started is the reply of POST /api/execute.
type Started struct {
	ExecutionID int64      `json:"execution_id"`
	Status      ExecStatus `json:"status"`
}

// Execution is one run of a playbook version.
type Execution struct {
	ExecutionID       int64           `json:"execution_id"`
	Path              string          `json:"path"`
	Version           int             `json:"version"`
	Status            ExecStatus      `json:"status"`
	StartedAt         time.Time       `json:"started_at"`
	EndedAt           *time.Time      `json:"ended_at"`
	Result            json.RawMessage `json:"result,omitempty"`
	Error             string          `json:"error,omitempty"`
	ParentExecutionID int64           `json:"parent_execution_id,omitempty"`
	// Context holds the values playbooks assign with `set`.
	Context json.RawMessage `json:"context,omitempty"`
}

// ExecutionPage is the reply of GET /api/executions, newest first.
type ExecutionPage struct {
	Executions []Execution `json:"executions"`
	Page       int         `json:"page"`
	PageSize   int         `json:"page_size"`
	Total      int64       `json:"total"`
}

// Event is one immutable fact of an execution's log.
type Event struct {
	EventID     int64           `json:"event_id"`
	ExecutionID int64           `json:"execution_id"`
	EventType   string          `json:"event_type"` // one of the Ev* constants
	Step        string          `json:"step"`
	CommandID   string          `json:"command_id"`
	Status      string          `json:"status"` // the command's or, for playbook.* events, the execution's status
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	WorkerID    string          `json:"worker_id,omitempty"`
	Attempt     int             `json:"attempt,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
}

// EventList is the reply of GET /api/executions/{id}/events, in order.
type EventList struct {
	Events []Event `json:"events"`
}

// Command is one issued unit of work (GET /api/commands/{event_id}). Its
// key is the event id of the command.issued event that created it.
type Command struct {
	EventID      int64           `json:"event_id"`
	ExecutionID  int64           `json:"execution_id"`
	CommandID    string          `json:"command_id"` // "<execution_id>:<step>:<event_id>"
	Step         string          `json:"step"`
	Tool         json.RawMessage `json:"tool"`            // rendered tool config, a JSON object with "kind"
	Input        json.RawMessage `json:"input,omitempty"` // a Payload, may be absent
	Status       CommandStatus   `json:"status"`
	Attempt      int             `json:"attempt"` // 0 until the first claim
	WorkerID     string          `json:"worker_id,omitempty"`
	LeaseExpires *time.Time      `json:"lease_expires_at,omitempty"`
	Result       json.RawMessage `json:"result,omitempty"`
	Error        string          `json:"error,omitempty"`
	Publishes    int             `json:"publishes"`
	PublishedAt  time.Time       `json:"published_at"`
	AvailableAt  time.Time       `json:"available_at"`
	LoopID       int64           `json:"loop_id,omitempty"`
	LoopIndex    int             `json:"loop_index,omitempty"`
	Retry        int             `json:"retry,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
	// Pool is the worker pool the step is routed to (its `pool:`);
	// absent for the default pool.
	Pool string `json:"pool,omitempty"`
}

// ClaimRequest is the body of POST /api/commands/{event_id}/claim, and of
// release (with Attempt).
type ClaimRequest struct {
	WorkerID string `json:"worker_id"`
	Attempt  int    `json:"attempt,omitempty"` // release only
	// ExecutionID is an optional hint (from the notification) that lets the
	// server keep one execution's writes together.
	ExecutionID int64 `json:"execution_id,omitempty"`
	// Start (claim only) records command.started with the claim, in one
	// transaction, for a worker that runs the command at once.
	Start bool `json:"start,omitempty"`
}

// Claimed is a granted claim: the command and how long its lease lasts.
type Claimed struct {
	Command
	LeaseTTLMillis int64 `json:"lease_ttl_ms"`
}

// ClaimItem names one command of a batch claim.
type ClaimItem struct {
	EventID     int64 `json:"event_id"`
	ExecutionID int64 `json:"execution_id,omitempty"`
}

// ClaimBatchRequest is the body of POST /api/commands/claim.
type ClaimBatchRequest struct {
	WorkerID string      `json:"worker_id"`
	Start    bool        `json:"start,omitempty"`
	Commands []ClaimItem `json:"commands"`
}

// ClaimResult is one item of a batch claim's reply, in request order:
// a claim or an error.
type ClaimResult struct {
	Claimed *Claimed      `json:"claimed,omitempty"`
	Error   *apierr.Error `json:"error,omitempty"`
	// HTTPStatus is what the single-item endpoint would have answered for
	// Error, so clients keep one rule for both.
	HTTPStatus int `json:"http_status,omitempty"`
}

// ClaimBatch is the reply of POST /api/commands/claim.
type ClaimBatch struct {
	Results []ClaimResult `json:"results"`
}

// ToolError is the structured error a worker reports.
type ToolError struct {
	Kind      string `json:"kind"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// Report is a worker's event about a command it holds (POST /api/events).
// The server also accepts the command named by command_id and an error
// given as a plain string.
type Report struct {
	EventType   string          `json:"event_type"`
	EventID     int64           `json:"event_id"`
	ExecutionID int64           `json:"execution_id,omitempty"`
	WorkerID    string          `json:"worker_id"`
	Attempt     int             `json:"attempt"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       *ToolError      `json:"error,omitempty"`
	// Context is what a completed task list assigned to the execution's
	// context ("ctx.<path>" -> value); the server merges it in.
	Context map[string]any `json:"context,omitempty"`
}

// Ack is the server's reply to a report.
type Ack struct {
	EventID int64         `json:"event_id,omitempty"` // the event recorded (0 for heartbeats)
	Status  CommandStatus `json:"status"`             // the command's status afterwards
}

// ReportBatchRequest is the body of POST /api/events/batch.
type ReportBatchRequest struct {
	Events []Report `json:"events"`
}

// ReportResult is one item of a report batch's reply, in request order.
type ReportResult struct {
	EventID    int64         `json:"event_id,omitempty"`
	Status     CommandStatus `json:"status,omitempty"`
	Error      *apierr.Error `json:"error,omitempty"`
	HTTPStatus int           `json:"http_status,omitempty"`
}

// ReportBatch is the reply of POST /api/events/batch.
type ReportBatch struct {
	Results []ReportResult `json:"results"`
}

// Released is the reply of POST /api/commands/{event_id}/release.
type Released struct {
	Status string `json:"status"` // "released"
}

// Health is the body of GET /api/health. Status is "ok" or "degraded";
// the reply is HTTP 503 only when the store is down.
type Health struct {
	Status string        `json:"status"`
	Store  string        `json:"store"`
	NATS   string        `json:"nats"`
	Stats  *Stats        `json:"stats,omitempty"`
	Detail *HealthDetail `json:"detail,omitempty"`
}

// HealthDetail is what health knows about the query face.
type HealthDetail struct {
	Queries *QueueStats `json:"queries,omitempty"`
	// QueriesStalled says what to do when queries are queued and no
	// warehouse worker pulls them.
	QueriesStalled string `json:"queries_stalled,omitempty"`
}

// Stats is a cheap summary of the store, in the health reply.
type Stats struct {
	ExecutionsRunning int64 `json:"executions_running"`
	CommandsPending   int64 `json:"commands_pending"` // issued, claimed or running
	OutboxDepth       int64 `json:"outbox_depth"`
}

// Credential is a named secret as the API shows it. Data is filled only by
// GET /api/credentials/{name}?include_data=true; every other reply carries
// metadata only.
type Credential struct {
	Name        string         `json:"name"`
	Kind        string         `json:"kind"`
	Description string         `json:"description"`
	Data        map[string]any `json:"data,omitempty"`
	CreatedAt   time.Time      `json:"created_at,omitzero"`
	UpdatedAt   time.Time      `json:"updated_at,omitzero"`
}

// CredentialRequest is the body of POST /api/credentials: create or
// replace a credential.
type CredentialRequest struct {
	Name        string         `json:"name"`
	Kind        string         `json:"kind"`
	Description string         `json:"description,omitempty"`
	Data        map[string]any `json:"data"` // the fields, sealed at rest
}

// CredentialList is the reply of GET /api/credentials, by name.
type CredentialList struct {
	Credentials []Credential `json:"credentials"`
}
