package builds

import (
	"errors"

	"github.com/millrace/millrace/internal/errkind"
)

// The errors builds returns for a request the caller can correct or a state
// it can act on (match with errors.Is; the text is the message). The API
// server maps each to its code; builds knows nothing of HTTP.
var (
	// ErrInvalid: a parameter is missing or out of range.
	ErrInvalid = errors.New("invalid request")
	// ErrModelNotFound: the project has no model of the name.
	ErrModelNotFound = errors.New("model not found")
	// ErrPreAggNotFound: the model declares no pre-aggregate of the name.
	ErrPreAggNotFound = errors.New("pre-aggregate not found")
	// ErrBuildNotFound: no build has the id (in the project).
	ErrBuildNotFound = errors.New("build not found")
	// ErrDisabled: PRE_AGGREGATES_ENABLED=false, so nothing is built.
	ErrDisabled = errors.New("pre-aggregates disabled")
	// ErrNotClaimable: the build is no longer queued (taken by another
	// worker, done, or its definition changed): the worker acks and moves on.
	ErrNotClaimable = errors.New("build cannot be claimed")
	// ErrNotHolder: the worker no longer holds the build (re-queued after
	// its heartbeat went stale, or ended): it should stop.
	ErrNotHolder = errors.New("worker does not hold the build")
	// ErrClaimNotYours: the caller named the build's holder but the claim
	// was made with another worker token.
	ErrClaimNotYours = errkind.ErrClaimNotYours
)

func errorf(kind error, format string, args ...any) error {
	return errkind.Errorf(kind, format, args...)
}

func isKind(err, kind error) bool { return errors.Is(err, kind) }

// notDeclared reports whether err says the model or pre-aggregate is gone.
func notDeclared(err error) bool {
	return errors.Is(err, ErrModelNotFound) || errors.Is(err, ErrPreAggNotFound)
}
