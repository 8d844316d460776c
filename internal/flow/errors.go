package flow

import (
	"errors"

	"github.com/millrace/millrace/internal/errkind"
)

// The errors flow returns for a request the caller can correct or a state
// it can act on. Match them with errors.Is; the error's text is the message
// for people, saying what happened and what to do next. flow knows nothing
// of HTTP: the API server maps each to its code (internal/server). Any
// other error is the server's fault or its store's.
var (
	// ErrInvalid: a field of the request is missing or out of range.
	ErrInvalid = errors.New("invalid request")
	// ErrInvalidPlaybook: the playbook does not parse or validate.
	ErrInvalidPlaybook = errors.New("invalid playbook")
	// ErrInvalidResult: a worker's report carries a result that is not JSON.
	ErrInvalidResult = errors.New("result is not valid JSON")
	// ErrPlaybookNotFound: no playbook is registered at the path (and version).
	ErrPlaybookNotFound = errors.New("playbook not found")
	// ErrExecutionNotFound: no execution has the id.
	ErrExecutionNotFound = errors.New("execution not found")
	// ErrCommandNotFound: no command has the event id.
	ErrCommandNotFound = errors.New("command not found")
	// ErrNotHolder: the worker does not hold the command: another worker
	// holds a live lease, its attempt is stale, or the command ended.
	ErrNotHolder = errors.New("worker does not hold the command")
	// ErrClaimNotYours: the caller named the holder of a live claim (worker
	// and attempt) but the claim was made with another worker token.
	ErrClaimNotYours = errkind.ErrClaimNotYours
	// ErrExecutionEnded: the execution is no longer running.
	ErrExecutionEnded = errors.New("execution already ended")
)

// errorf returns an error that matches kind and reads as the message.
func errorf(kind error, format string, args ...any) error {
	return errkind.Errorf(kind, format, args...)
}
