package server

import (
	"net/http"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/builds"
)

// Pre-aggregate builds: the public status and refresh endpoints, and the
// worker protocol of `millrace worker --stream pre-aggregate` (package
// builds owns the logic).

// WithBuilds enables the pre-aggregate build endpoints.
func WithBuilds(b *builds.Service) Option {
	return func(a *API) { a.buildsRoutes(b) }
}

func init() {
	domainCodes = append(domainCodes, []struct {
		err  error
		code apierr.Code
	}{
		{builds.ErrInvalid, apierr.BadRequest},
		{builds.ErrModelNotFound, apierr.ModelNotFound},
		{builds.ErrPreAggNotFound, apierr.PreAggNotFound},
		{builds.ErrBuildNotFound, apierr.BuildNotFound},
		{builds.ErrDisabled, apierr.StateConflict},
		{builds.ErrNotClaimable, apierr.ClaimConflict},
		{builds.ErrNotHolder, apierr.StateConflict},
		{builds.ErrClaimNotYours, apierr.ClaimNotYours},
	}...)
}

func (a *API) buildsRoutes(b *builds.Service) {
	if b == nil {
		return
	}
	a.route("GET /api/v2/projects/{project}/preaggregates", auth.Readers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return b.List(r.Context(), r.PathValue("project"))
	})
	a.route("GET /api/v2/projects/{project}/preaggregates/builds", auth.Readers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		limit, err := queryInt(r, "limit", DefaultPageSize, 1, MaxPageSize)
		if err != nil {
			return nil, err
		}
		offset, err := queryInt(r, "offset", 0, 0, 1<<30)
		if err != nil {
			return nil, err
		}
		q := r.URL.Query()
		return b.History(r.Context(), r.PathValue("project"), q.Get("model"), q.Get("name"), offset, limit)
	})
	a.route("GET /api/v2/projects/{project}/preaggregates/builds/{uuid}", auth.Readers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		return b.ProjectBuild(r.Context(), r.PathValue("project"), r.PathValue("uuid"))
	})
	a.route("POST /api/v2/projects/{project}/preaggregates/{model}/{name}/refresh", auth.Operators, func(w http.ResponseWriter, r *http.Request) (any, error) {
		bl, err := b.Trigger(r.Context(), r.PathValue("project"), r.PathValue("model"), r.PathValue("name"), builds.TriggerManual)
		if err != nil {
			return nil, err
		}
		return reply{http.StatusAccepted, api.RefreshStarted{BuildUUID: bl.BuildUUID, Status: bl.Status, Trigger: bl.Trigger}}, nil
	})

	// Worker protocol (snake_case bodies, like the warehouse one).
	a.route("POST /api/v2/internal/preaggregates/builds/{uuid}/claim", auth.Workers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var body api.BuildWorker
		if err := decodeWorker(r, &body, &body.WorkerID); err != nil {
			return nil, err
		}
		return b.Claim(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()))
	})
	a.route("POST /api/v2/internal/preaggregates/builds/{uuid}/heartbeat", auth.Workers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var body api.BuildWorker
		if err := decodeWorker(r, &body, &body.WorkerID); err != nil {
			return nil, err
		}
		bl, err := b.Heartbeat(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()))
		if err != nil {
			return nil, err
		}
		return api.BuildAck{BuildUUID: bl.BuildUUID, Status: bl.Status}, nil
	})
	a.route("POST /api/v2/internal/preaggregates/builds/{uuid}/complete", auth.Workers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var body api.BuildCompleteRequest
		if err := decodeWorker(r, &body, &body.WorkerID); err != nil {
			return nil, err
		}
		bl, err := b.Complete(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()), body.BuildComplete)
		if err != nil {
			return nil, err
		}
		return api.BuildAck{BuildUUID: bl.BuildUUID, Status: bl.Status, Error: bl.Error}, nil
	})
	a.route("POST /api/v2/internal/preaggregates/builds/{uuid}/fail", auth.Workers, func(w http.ResponseWriter, r *http.Request) (any, error) {
		var body api.BuildFailRequest
		if err := decodeWorker(r, &body, &body.WorkerID); err != nil {
			return nil, err
		}
		bl, err := b.Fail(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()), body.Error)
		if err != nil {
			return nil, err
		}
		return api.BuildAck{BuildUUID: bl.BuildUUID, Status: bl.Status, Error: bl.Error}, nil
	})
}

// decodeWorker decodes a worker's body and requires its worker_id.
func decodeWorker(r *http.Request, body any, workerID *string) error {
	if err := decode(r, body); err != nil {
		return err
	}
	if *workerID == "" {
		return apierr.New(apierr.BadRequest, "worker_id is required")
	}
	return nil
}
