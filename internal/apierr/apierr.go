// Package apierr is Millrace's catalogue of API errors. Every error the HTTP
// API returns has a stable code from this list, so clients and operators can
// match on it; the message is for people and may change.
//
// Wire form: {"error": {"code": "...", "message": "..."}}.
//
// The catalogue below is the one source of the error-code table in
// docs/api.md; a test keeps the two in step.
package apierr

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Code is a stable, machine-readable error identifier.
type Code string

// The codes. Never rename or remove one; add new codes at the end, and to
// the catalogue.
const (
	BadJSON              Code = "bad_json"
	BadRequest           Code = "bad_request"
	TooLarge             Code = "payload_too_large"
	InvalidPlaybook      Code = "invalid_playbook"
	NotFound             Code = "not_found"
	PlaybookNotFound     Code = "playbook_not_found"
	ExecNotFound         Code = "execution_not_found"
	CommandNotFound      Code = "command_not_found"
	ClaimConflict        Code = "claim_conflict"
	StateConflict        Code = "state_conflict"
	MethodNotAllowed     Code = "method_not_allowed"
	Unavailable          Code = "unavailable"
	Internal             Code = "internal"
	SecretKeyMissing     Code = "secret_key_missing"
	CredentialNotFound   Code = "credential_not_found"
	CredentialUnreadable Code = "credential_unreadable"
	ProjectNotFound      Code = "project_not_found"
	QueryNotFound        Code = "query_not_found"
	ResultsExpired       Code = "results_expired"
	UnknownModel         Code = "unknown_model"
	UnknownField         Code = "unknown_field"
	InvalidFilter        Code = "invalid_filter"
	InvalidModel         Code = "invalid_model"
	ModelNotFound        Code = "model_not_found"
	PreAggNotFound       Code = "preaggregate_not_found"
	BuildNotFound        Code = "build_not_found"
	Unauthenticated      Code = "unauthenticated"
	Forbidden            Code = "forbidden"
	ClaimNotYours        Code = "claim_not_yours"
	TokenNotFound        Code = "token_not_found"
	RequestNotFound      Code = "request_not_found"
	UpstreamUnavailable  Code = "upstream_unavailable"
	Overloaded           Code = "overloaded"
	BudgetExceeded       Code = "budget_exceeded"
	IdempotencyMismatch  Code = "idempotency_key_reused"
	NULCharacter         Code = "nul_character"
)

// Entry is one code of the catalogue: its HTTP status and what it means.
type Entry struct {
	Code    Code
	Status  int
	Meaning string // Markdown, one line: rendered into docs/api.md
}

// catalogue is every code the API can return, in the order of the const
// block above.
var catalogue = []Entry{
	{BadJSON, http.StatusBadRequest, "the body is not valid JSON, has unknown fields or trailing data, or is empty"},
	{BadRequest, http.StatusBadRequest, "a field or parameter is missing or out of range; the message says which"},
	{TooLarge, http.StatusRequestEntityTooLarge, "the body exceeds `MILLRACE_MAX_BODY_BYTES`"},
	{InvalidPlaybook, http.StatusUnprocessableEntity, "the playbook failed to parse or validate; the message lists every problem as `file:line:col: message (hint: …)`"},
	{NotFound, http.StatusNotFound, "no route has this path"},
	{PlaybookNotFound, http.StatusNotFound, "no playbook is registered at this catalog path (and version)"},
	{ExecNotFound, http.StatusNotFound, "no execution has this id"},
	{CommandNotFound, http.StatusNotFound, "no command has this event id"},
	{ClaimConflict, http.StatusConflict, "another worker holds a live lease, the attempt is stale, or the command (or warehouse query) ended or expired: stop working on it"},
	{StateConflict, http.StatusConflict, "the request does not fit the current state (e.g. cancel a finished execution, read the results of a failed query)"},
	{MethodNotAllowed, http.StatusMethodNotAllowed, "the route exists but not for this method; the `Allow` header lists the methods it takes"},
	{Unavailable, http.StatusServiceUnavailable, "the event store is not reachable (down, restarting, connections lost); retry after the `Retry-After` header's seconds. A submit may have committed before the connection broke: retry it with the same `Idempotency-Key`"},
	{Internal, http.StatusInternalServerError, "a bug; the server log has details"},
	{SecretKeyMissing, http.StatusServiceUnavailable, "the server has no `MILLRACE_SECRET_KEY`; credentials and warehouse projects are disabled until it is set"},
	{CredentialNotFound, http.StatusNotFound, "no credential has this name"},
	{CredentialUnreadable, http.StatusConflict, "the credential was sealed with another `MILLRACE_SECRET_KEY`, or its stored data was altered; add it again"},
	{ProjectNotFound, http.StatusNotFound, "no warehouse project has this name"},
	{QueryNotFound, http.StatusNotFound, "no warehouse query has this id (in this project)"},
	{ResultsExpired, http.StatusGone, "the query's results are past `CACHE_STALE_TIME_SECONDS`, or it expired in the queue; run it again"},
	{UnknownModel, http.StatusBadRequest, "a metric query's `exploreName` names no model of the project; the message names it"},
	{UnknownField, http.StatusBadRequest, "a metric query names a field id the model does not have (a dimension, metric, filter or sort); the message names it"},
	{InvalidFilter, http.StatusBadRequest, "a metric query's filter does not fit its field's type (e.g. `greaterThan` on a boolean, a number that is not one, an unparsable date)"},
	{InvalidModel, http.StatusBadRequest, "a model definition failed to parse or validate; the message lists every problem as `request:line:col: reason`"},
	{ModelNotFound, http.StatusNotFound, "no model of the project has this name"},
	{PreAggNotFound, http.StatusNotFound, "the project's model declares no pre-aggregate of this name"},
	{BuildNotFound, http.StatusNotFound, "no pre-aggregate build has this id (in this project)"},
	{Unauthenticated, http.StatusUnauthorized, "no token, or one that is unknown, expired or revoked (the reply never says which); send `Authorization: Bearer <token>` (see docs/security.md)"},
	{Forbidden, http.StatusForbidden, "the token's role may not use this route; the message names the roles that may (docs/security.md has the matrix)"},
	{ClaimNotYours, http.StatusForbidden, "the command, query or build was claimed with another worker token: only that token may heartbeat, report or release it"},
	{TokenNotFound, http.StatusNotFound, "no API token has this id or name"},
	{RequestNotFound, http.StatusNotFound, "the gateway has no pending request with this id (it finished, or expired after `NATS_REQUEST_TTL_SECS`)"},
	{UpstreamUnavailable, http.StatusBadGateway, "the gateway could not reach the Millrace server; retry shortly"},
	{Overloaded, http.StatusTooManyRequests, "the server holds `MILLRACE_MAX_INFLIGHT_WRITES` write requests already; retry after the `Retry-After` header's seconds (the CLI, the Go client and workers do, with jittered backoff)"},
	{BudgetExceeded, http.StatusUnprocessableEntity, "the request exceeds a budget for user-supplied work; the message names the setting and its limit (e.g. `MILLRACE_MAX_WORKLOAD_BYTES`)"},
	{IdempotencyMismatch, http.StatusUnprocessableEntity, "this `Idempotency-Key` was first used with a different request (another path, version or payload); use a new key for a new request"},
	{NULCharacter, http.StatusBadRequest, "a string in the body contains a NUL character (`\\u0000`), which the event store cannot hold; the message gives its JSON path"},
}

var statuses = func() map[Code]int {
	m := make(map[Code]int, len(catalogue))
	for _, e := range catalogue {
		m[e.Code] = e.Status
	}
	return m
}()

// Catalogue returns every code with its status and meaning.
func Catalogue() []Entry { return append([]Entry(nil), catalogue...) }

// Status is the HTTP status of code; 500 for a code not in the catalogue.
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Markdown renders the catalogue as the table of docs/api.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| code | status | meaning |\n|---|---|---|\n")
	for _, e := range catalogue {
		fmt.Fprintf(&b, "| `%s` | %d | %s |\n", e.Code, e.Status, e.Meaning)
	}
	return b.String()
}

// Error is an API error.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Status is the HTTP status for the error's code.
func (e *Error) Status() int { return e.Code.Status() }

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
