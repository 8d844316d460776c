package server

import (
	"net/http"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/wire"
)

// executionFail is POST /api/executions/{id}/fail: an operator fails an
// execution stuck on a repeating server error (flow.Service.Fail).
func (a *API) executionFail(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := pathInt(r, "id")
	if err != nil {
		return nil, err
	}
	var body api.ExecutionFailRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	e, err := a.flow.Fail(r.Context(), id, body.Reason)
	if err != nil {
		return nil, err
	}
	return wire.Execution(e), nil
}
