package query

import (
	"errors"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/errkind"
	"github.com/millrace/millrace/internal/store"
)

// The errors query returns for a request the caller can correct or a state
// it can act on. Match them with errors.Is; the error's text is the message
// for people, saying what happened and what to do next. query knows nothing
// of HTTP: the API server maps each to its code (internal/server). Any other
// error is the server's fault, its store's or its warehouse's.
var (
	// ErrInvalid: a field of the request is missing or out of range.
	ErrInvalid = errors.New("invalid request")
	// ErrInvalidResults: a worker's result upload is not the NDJSON the
	// protocol asks for.
	ErrInvalidResults = errors.New("malformed result upload")
	// ErrSecretKeyMissing: the server has no MILLRACE_SECRET_KEY, so it
	// cannot seal or open project connections.
	ErrSecretKeyMissing = errors.New("no secret key")
	// ErrProjectNotFound: no project has the name.
	ErrProjectNotFound = errors.New("project not found")
	// ErrQueryNotFound: no query has the id (in the project).
	ErrQueryNotFound = errors.New("query not found")
	// ErrResultsExpired: the results are gone, or the query expired in the
	// queue; run it again.
	ErrResultsExpired = errors.New("results expired")
	// ErrNoResults: the query has no results to read: it failed, was
	// cancelled, or has not finished.
	ErrNoResults = errors.New("query has no results")
	// ErrQueryEnded: the query already ended, so it cannot be cancelled.
	ErrQueryEnded = errors.New("query already ended")
	// ErrNotClaimable: the query is no longer queued (cancelled, taken by
	// another worker, done) or it waited too long and expired.
	ErrNotClaimable = errors.New("query cannot be claimed")
	// ErrNotHolder: the worker no longer runs the query (cancelled,
	// re-queued to another worker, done): it should stop.
	ErrNotHolder = errors.New("worker does not hold the query")
	// ErrClaimNotYours: the caller named the query's holder but the claim
	// was made with another worker token.
	ErrClaimNotYours = errkind.ErrClaimNotYours

	// The metrics layer (models and metric queries).

	// ErrUnknownModel: a metric query's exploreName names no model of the
	// project.
	ErrUnknownModel = errors.New("unknown model")
	// ErrUnknownField: a metric query names a field id its model lacks.
	ErrUnknownField = errors.New("unknown field")
	// ErrInvalidFilter: a filter does not fit its field's type.
	ErrInvalidFilter = errors.New("invalid filter")
	// ErrInvalidModel: a model definition failed to parse or validate.
	ErrInvalidModel = errors.New("invalid model")
	// ErrModelNotFound: no model of the project has the name (reading or
	// deleting one by name).
	ErrModelNotFound = errors.New("model not found")
)

// errorf returns an error that matches kind and reads as the message.
func errorf(kind error, format string, args ...any) error {
	return errkind.Errorf(kind, format, args...)
}

// notYours is the refusal for a worker that names a query's holder with
// another worker token than the claim's; the holder keeps the query.
func notYours(uuid, worker string) error {
	return errorf(ErrClaimNotYours, "query %s (worker %q) was claimed with another worker token; only the token that claimed it may heartbeat, upload, fail or fall back", uuid, worker)
}

// otherToken reports whether worker is q's holder but token is not the
// claim's (a claim made without a token accepts any).
func otherToken(q store.Query, worker string, token int64) bool {
	return q.Status == api.QueryExecuting && q.WorkerID == worker && q.ClaimTokenID != 0 && q.ClaimTokenID != token
}
