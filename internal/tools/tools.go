// Package tools runs the tools a worker executes for a command: the step's
// rendered tool config arrives as a map with a "kind" key, and Run dispatches
// it to the matching Runner.
//
// Adding a tool means writing one file with a Runner and its allowed config
// keys, and adding one line to registry below.
package tools

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Error kinds that are not a tool's own kind. Failures while a tool runs use
// the tool's kind ("shell", "http", ...).
const (
	// ErrorKindUnknown: the config names no tool this worker knows.
	ErrorKindUnknown = "unknown"
	// ErrorKindConfig: the config is malformed (wrong type, missing field).
	ErrorKindConfig = "config"
	// ErrorKindCanceled: the caller's context ended while the tool ran
	// (worker shutdown, lost lease). Retryable: the work itself did not fail.
	ErrorKindCanceled = "canceled"
)

// Error is the structured failure a tool reports. The worker sends Kind,
// Message and Retryable to the server.
type Error struct {
	Kind      string `json:"kind"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	// Result is what the tool produced before failing, e.g. a shell
	// command's output and exit code, or an HTTP error response.
	Result any `json:"result,omitempty"`
}

func (e *Error) Error() string {
	if e.Retryable {
		return fmt.Sprintf("%s error (retryable): %s", e.Kind, e.Message)
	}
	return fmt.Sprintf("%s error: %s", e.Kind, e.Message)
}

// Runner executes one tool invocation. cfg is the full tool config including
// "kind". Errors returned by Run (the package function) are always *Error.
// Tools that need credentials or child executions take them from EnvFrom(ctx).
type Runner interface {
	Run(ctx context.Context, cfg map[string]any) (any, error)
}

// Env is what a tool may ask of its surroundings (the worker provides it).
type Env interface {
	// Credential returns the decrypted fields of the named credential,
	// e.g. {"host", "port", "user", "password", "database"} for postgres.
	Credential(ctx context.Context, name string) (map[string]any, error)
	// RunPlaybook starts a child execution of req.Path and waits for it to
	// end; it returns the child's result (or, with ReturnStep, that step's
	// result). A child that fails returns an error.
	RunPlaybook(ctx context.Context, req ChildRequest) (any, error)
}

// ChildRequest describes a child execution for the playbook tool.
type ChildRequest struct {
	Path       string
	Version    int // 0 = latest
	Payload    map[string]any
	ReturnStep string
}

type envKey struct{}

// WithEnv returns a context carrying env for the tools run under it.
func WithEnv(ctx context.Context, env Env) context.Context {
	return context.WithValue(ctx, envKey{}, env)
}

// EnvFrom returns the Env in ctx, or nil.
func EnvFrom(ctx context.Context) Env {
	env, _ := ctx.Value(envKey{}).(Env)
	return env
}

type tool struct {
	keys   []string // allowed config keys besides "kind"
	runner Runner
}

var registry = map[string]tool{
	"noop":     {keys: noopKeys, runner: noopTool{}},
	"shell":    {keys: shellKeys, runner: shellTool{}},
	"http":     {keys: httpKeys, runner: httpTool{}},
	"python":   {keys: pythonKeys, runner: pythonTool{}},
	"nats":     {keys: natsKeys, runner: natsTool{}},
	"playbook": {keys: playbookKeys, runner: playbookTool{}},
	"postgres": {keys: postgresKeys, runner: postgresTool{}},
	"duckdb":   {keys: duckdbKeys, runner: duckdbTool{}},
}

// Kinds returns, for each tool kind, the config keys it accepts besides
// "kind", sorted. The map is a fresh copy the caller may modify.
func Kinds() map[string][]string {
	out := make(map[string][]string, len(registry))
	for kind, t := range registry {
		keys := slices.Clone(t.keys)
		sort.Strings(keys)
		out[kind] = keys
	}
	return out
}

// Run executes the tool named by cfg["kind"]. Unknown keys are ignored here;
// the playbook validator rejects them using Kinds. Every error returned is an
// *Error.
func Run(ctx context.Context, cfg map[string]any) (any, error) {
	kind, ok := cfg["kind"].(string)
	if !ok || kind == "" {
		return nil, &Error{Kind: ErrorKindUnknown, Message: fmt.Sprintf(
			"tool config has no \"kind\" string; set kind to one of %s", knownKinds())}
	}
	t, ok := registry[kind]
	if !ok {
		return nil, &Error{Kind: ErrorKindUnknown, Message: fmt.Sprintf(
			"unknown tool kind %q; this worker supports %s", kind, knownKinds())}
	}
	res, err := t.runner.Run(ctx, cfg)
	if err == nil {
		return res, nil
	}
	var te *Error
	if errors.As(err, &te) {
		return res, te
	}
	return res, &Error{Kind: kind, Message: err.Error()}
}

func knownKinds() string {
	kinds := make([]string, 0, len(registry))
	for k := range registry {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}
