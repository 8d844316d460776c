// Package apierr is Millrace's catalogue of API errors. Every error the HTTP
// API returns has a stable code from this list, so clients and operators can
// match on it; the message is for people and may change.
//
// Wire form: {"error": {"code": "...", "message": "..."}}.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable, machine-readable error identifier.
type Code string

// The catalogue. Never renumber or rename; add new codes at the end.
const (
	BadJSON          Code = "bad_json"          // body is not valid JSON or has unknown fields
	BadRequest       Code = "bad_request"       // a field is missing or out of range
	TooLarge         Code = "payload_too_large" // body exceeds the limit
	InvalidPlaybook  Code = "invalid_playbook"  // playbook failed to parse or validate
	NotFound         Code = "not_found"         // no such route
	PlaybookNotFound Code = "playbook_not_found"
	ExecNotFound     Code = "execution_not_found"
	CommandNotFound  Code = "command_not_found"
	ClaimConflict    Code = "claim_conflict" // live claim held elsewhere, or command ended
	StateConflict    Code = "state_conflict" // transition not allowed (e.g. cancel a finished execution)
	MethodNotAllowed Code = "method_not_allowed"
	Unavailable      Code = "unavailable" // a dependency (database) is down; retry later
	Internal         Code = "internal"
	// SecretKeyMissing: the server has no MILLRACE_SECRET_KEY, so it cannot
	// store or read credentials.
	SecretKeyMissing   Code = "secret_key_missing"
	CredentialNotFound Code = "credential_not_found"
	// CredentialUnreadable: a stored credential was sealed under another
	// key, or its sealed data was altered.
	CredentialUnreadable Code = "credential_unreadable"
	ProjectNotFound      Code = "project_not_found"
	QueryNotFound        Code = "query_not_found"
	// ResultsExpired: a query's results are past CACHE_STALE_TIME_SECONDS
	// (or it expired in the queue); run it again.
	ResultsExpired Code = "results_expired"
)

var status = map[Code]int{
	BadJSON:          http.StatusBadRequest,
	BadRequest:       http.StatusBadRequest,
	TooLarge:         http.StatusRequestEntityTooLarge,
	InvalidPlaybook:  http.StatusUnprocessableEntity,
	NotFound:         http.StatusNotFound,
	PlaybookNotFound: http.StatusNotFound,
	ExecNotFound:     http.StatusNotFound,
	CommandNotFound:  http.StatusNotFound,
	ClaimConflict:    http.StatusConflict,
	StateConflict:    http.StatusConflict,
	MethodNotAllowed: http.StatusMethodNotAllowed,
	Unavailable:      http.StatusServiceUnavailable,
	Internal:         http.StatusInternalServerError,

	SecretKeyMissing:     http.StatusServiceUnavailable,
	CredentialNotFound:   http.StatusNotFound,
	CredentialUnreadable: http.StatusConflict,
	ProjectNotFound:      http.StatusNotFound,
	QueryNotFound:        http.StatusNotFound,
	ResultsExpired:       http.StatusGone,
}

// Error is an API error.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Status is the HTTP status for the error's code.
func (e *Error) Status() int {
	if s, ok := status[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// New builds an error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// As extracts an *Error from err, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Envelope is the JSON body of an error response.
type Envelope struct {
	Error *Error `json:"error"`
}
