package server

import (
	"errors"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/query"
)

// domainCodes maps the domain packages' errors to API codes: the one place
// where flow and query errors become HTTP ones. The domain error's text is
// the message.
var domainCodes = []struct {
	err  error
	code apierr.Code
}{
	{flow.ErrInvalid, apierr.BadRequest},
	{flow.ErrInvalidPlaybook, apierr.InvalidPlaybook},
	{flow.ErrInvalidResult, apierr.BadJSON},
	{flow.ErrPlaybookNotFound, apierr.PlaybookNotFound},
	{flow.ErrExecutionNotFound, apierr.ExecNotFound},
	{flow.ErrCommandNotFound, apierr.CommandNotFound},
	{flow.ErrNotHolder, apierr.ClaimConflict},
	{flow.ErrClaimNotYours, apierr.ClaimNotYours}, // one kind shared with query and builds (errkind.ErrClaimNotYours)
	{flow.ErrExecutionEnded, apierr.StateConflict},
	{flow.ErrChildDepth, apierr.BudgetExceeded},
	{flow.ErrBudget, apierr.BudgetExceeded},

	{query.ErrInvalid, apierr.BadRequest},
	{query.ErrInvalidResults, apierr.BadJSON},
	{query.ErrSecretKeyMissing, apierr.SecretKeyMissing},
	{query.ErrProjectNotFound, apierr.ProjectNotFound},
	{query.ErrQueryNotFound, apierr.QueryNotFound},
	{query.ErrResultsExpired, apierr.ResultsExpired},
	{query.ErrNoResults, apierr.StateConflict},
	{query.ErrQueryEnded, apierr.StateConflict},
	{query.ErrNotClaimable, apierr.ClaimConflict},
	{query.ErrNotHolder, apierr.StateConflict},
	{query.ErrClaimNotYours, apierr.ClaimNotYours},
	{query.ErrUnknownModel, apierr.UnknownModel},
	{query.ErrUnknownField, apierr.UnknownField},
	{query.ErrInvalidFilter, apierr.InvalidFilter},
	{query.ErrInvalidModel, apierr.InvalidModel},
	{query.ErrModelNotFound, apierr.ModelNotFound},
}

// apiError is the API error a client gets for err. caused is false when
// the fault is the server's (a bug, or its store is down): worth a log line.
func apiError(err error) (e *apierr.Error, caused bool) {
	if e, ok := apierr.As(err); ok {
		return e, true
	}
	for _, d := range domainCodes {
		if errors.Is(err, d.err) {
			return &apierr.Error{Code: d.code, Message: err.Error()}, true
		}
	}
	if storeDown(err) {
		return apierr.New(apierr.Unavailable, "the event store is not available right now; retry after the Retry-After header's seconds"), false
	}
	return apierr.New(apierr.Internal, "internal error; the server log has details"), false
}
