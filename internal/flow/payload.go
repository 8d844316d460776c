package flow

import (
	"bytes"
	"encoding/json"

	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
)

// Payload is what a command carries besides its tool config (the command's
// Input column). The server renders what it can; the worker finishes the
// job where only it can: templates that read `keychain` (secrets never pass
// through the server's event log or API) and task lists, whose later tasks
// read the results of earlier ones.
type Payload struct {
	// Scope is set when the worker has templates left to render.
	Scope *ScopeWire `json:"scope,omitempty"`
	// Tasks is the step's task list, unrendered, when the tool is a list.
	Tasks []TaskWire `json:"tasks,omitempty"`
	// Keychain maps template names to credential names.
	Keychain map[string]string `json:"keychain,omitempty"`
	// TimeoutSeconds bounds the whole command (the step's `timeout`).
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
	// Assert is a single tool's contract, checked by the worker.
	Assert *playbook.Assert `json:"assert,omitempty"`
}

// TaskWire is one named task of a task list.
type TaskWire struct {
	Name   string           `json:"name"`
	Tool   map[string]any   `json:"tool"`
	Set    map[string]any   `json:"set,omitempty"`
	Policy *playbook.Policy `json:"policy,omitempty"`
	Assert *playbook.Assert `json:"assert,omitempty"`
}

// ScopeWire is engine.Scope on the wire.
type ScopeWire struct {
	ExecutionID int64          `json:"execution_id"`
	Workload    map[string]any `json:"workload,omitempty"`
	Results     map[string]any `json:"results,omitempty"`
	Context     map[string]any `json:"context,omitempty"`
	Extra       map[string]any `json:"extra,omitempty"`
}

// Wire converts a scope for a payload.
func Wire(s engine.Scope) *ScopeWire {
	return &ScopeWire{ExecutionID: s.ExecutionID, Workload: s.Workload, Results: s.Results, Context: s.Context, Extra: s.Extra}
}

// Scope converts back.
func (w *ScopeWire) Scope() engine.Scope {
	return engine.Scope{ExecutionID: w.ExecutionID, Workload: w.Workload, Results: w.Results, Context: w.Context, Extra: w.Extra}
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

func keychainMap(pb *playbook.Playbook) map[string]string {
	if len(pb.Keychain) == 0 {
		return nil
	}
	m := make(map[string]string, len(pb.Keychain))
	for _, k := range pb.Keychain {
		m[k.Name] = k.Credential
	}
	return m
}
