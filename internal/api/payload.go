package api

import (
	"bytes"
	"encoding/json"

	"github.com/millrace/millrace/internal/playbook"
)

// Payload is what a command carries besides its tool config (the command's
// Input). The server renders what it can; the worker finishes the job where
// only it can: templates that read `keychain` (secrets never pass through
// the server's event log or API) and task lists, whose later tasks read the
// results of earlier ones.
type Payload struct {
	// Scope is set when the worker has templates left to render.
	Scope *Scope `json:"scope,omitempty"`
	// Tasks is the step's task list, unrendered, when the tool is a list.
	Tasks []Task `json:"tasks,omitempty"`
	// Keychain maps template names to credential names.
	Keychain map[string]string `json:"keychain,omitempty"`
	// TimeoutSeconds bounds the whole command (the step's `timeout`).
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
	// Assert is a single tool's contract, checked by the worker.
	Assert *playbook.Assert `json:"assert,omitempty"`
	// Cursor makes the command one drain slot of a cursor loop: it claims
	// rows and runs Tasks once per row (or per claim) until a claim
	// returns none.
	Cursor *Cursor `json:"cursor,omitempty"`
}

// Cursor is what one drain slot of a cursor loop needs (playbook.Cursor and
// playbook.Frame). Auth and Claim are templates, rendered by the worker.
type Cursor struct {
	Kind           string `json:"kind"`
	Auth           string `json:"auth"`
	Claim          string `json:"claim"`
	Iterator       string `json:"iterator"`
	Slot           int    `json:"slot"` // 1-based, of MaxInFlight
	MaxRows        int    `json:"max_rows"`
	RowConcurrency int    `json:"row_concurrency"`
	Process        string `json:"process"`
}

// Task is one named task of a task list.
type Task struct {
	Name   string           `json:"name"`
	Tool   map[string]any   `json:"tool"`
	Set    map[string]any   `json:"set,omitempty"`
	Policy *playbook.Policy `json:"policy,omitempty"`
	Assert *playbook.Assert `json:"assert,omitempty"`
}

// Scope is the template scope on the wire: engine.Scope's data fields
// (not its Budget, which each process sets from its own settings).
type Scope struct {
	ExecutionID int64          `json:"execution_id"`
	Workload    map[string]any `json:"workload,omitempty"`
	Results     map[string]any `json:"results,omitempty"`
	Context     map[string]any `json:"context,omitempty"`
	Extra       map[string]any `json:"extra,omitempty"`
}

// DecodePayload reads a command's Input; an empty input is an empty payload.
func DecodePayload(raw json.RawMessage) (Payload, error) {
	var p Payload
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	// Numbers stay json.Number so 64-bit ids in the scope keep every digit.
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	err := d.Decode(&p)
	return p, err
}
