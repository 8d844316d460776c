package server

import (
	"errors"
	"io"
	"net/http"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/query"
	"github.com/millrace/millrace/internal/semantic"
)

// The metrics layer's endpoints: a project's models, metric queries
// (Lightdash's shape), and the pre-aggregate worker's fallback. Metric
// queries are polled, paged, cancelled and listed through the SQL query
// endpoints (queryapi.go).
func (a *API) metricRoutes() {
	a.route("POST /api/v2/projects/{project}/models", auth.Operators, a.modelsPut)
	a.route("GET /api/v2/projects/{project}/models", auth.Readers, a.modelList)
	a.route("GET /api/v2/projects/{project}/models/{name}", auth.Readers, a.modelGet)
	a.route("DELETE /api/v2/projects/{project}/models/{name}", auth.Operators, a.modelDelete)
	a.route("GET /api/v2/projects/{project}/explores", auth.Readers, a.exploreList)
	a.route("POST /api/v2/projects/{project}/query/metric-query", auth.Readers, a.metricQuerySubmit)
	a.route("POST /api/v2/internal/queries/{uuid}/fallback", auth.Workers, a.queryFallback)
}

// modelsPut stores the models of a YAML or JSON document {models: [...]}
// (whatever the Content-Type: JSON is YAML). A bad document is 400
// invalid_model listing every problem as request:line:col.
func (a *API) modelsPut(w http.ResponseWriter, r *http.Request) (any, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, apierr.New(apierr.TooLarge, "request body exceeds %d bytes (MILLRACE_MAX_BODY_BYTES)", tooBig.Limit)
		}
		return nil, apierr.New(apierr.BadRequest, "reading the body: %v", err)
	}
	names, err := a.query.PutModelsDoc(r.Context(), r.PathValue("project"), body)
	if err != nil {
		return nil, err
	}
	return api.ModelsPut{Models: names}, nil
}

func (a *API) modelList(w http.ResponseWriter, r *http.Request) (any, error) {
	ms, err := a.query.Models(r.Context(), r.PathValue("project"))
	if err != nil {
		return nil, err
	}
	return api.ModelList{Models: ms}, nil
}

func (a *API) modelGet(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.query.Model(r.Context(), r.PathValue("project"), r.PathValue("name"))
}

func (a *API) modelDelete(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.query.DeleteModel(r.Context(), r.PathValue("project"), r.PathValue("name")); err != nil {
		return nil, err
	}
	return map[string]any{"model": r.PathValue("name"), "deleted": true}, nil
}

// metricQuerySubmit is Lightdash's POST .../query/metric-query: the reply
// is api.Submitted with cacheMetadata.preAggregate saying whether a
// pre-aggregate serves the query and, if not, why not.
func (a *API) metricQuerySubmit(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.MetricQuerySubmit
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	q, err := a.query.SubmitMetric(r.Context(), query.MetricRequest{Project: r.PathValue("project"), Query: body.Query,
		Lane: body.Context, InvalidateCache: body.InvalidateCache, Bypass: body.UsePreAggregates != nil && !*body.UsePreAggregates,
		User: r.Header.Get("X-Millrace-User")})
	if err != nil {
		return nil, err
	}
	return api.Submitted{QueryUUID: q.QueryUUID, CacheMetadata: api.CacheMetadata{CacheHit: q.CacheHit, PreAggregate: query.PreAggMeta(q)}}, nil
}

// queryFallback is the pre-aggregate worker's report that it cannot serve
// the query it holds (its build's Parquet is gone): the query goes back to
// queued for the warehouse.
func (a *API) queryFallback(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		WorkerID string `json:"worker_id"`
		api.QueryFallback
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.WorkerID == "" {
		return nil, apierr.New(apierr.BadRequest, "worker_id is required")
	}
	q, err := a.query.Fallback(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()), body.Code, body.Message)
	if err != nil {
		return nil, err
	}
	return map[string]any{"queryUuid": q.QueryUUID, "status": q.Status}, nil
}

// explore is a model as a metric query sees it: every field id it can
// ask for.
type explore struct {
	Name          string         `json:"name"`
	Description   string         `json:"description,omitempty"`
	Dimensions    []exploreField `json:"dimensions"`
	Metrics       []exploreField `json:"metrics"`
	PreAggregates []string       `json:"preAggregates"`
}

type exploreField struct {
	FieldID     string `json:"fieldId"`
	Name        string `json:"name"`
	Type        string `json:"type"`
	Grain       string `json:"grain,omitempty"` // a time dimension at a grain
	Description string `json:"description,omitempty"`
}

// exploreList lists the field ids of every model (Lightdash's explores):
// a time dimension once raw and once per grain it can be asked for at.
func (a *API) exploreList(w http.ResponseWriter, r *http.Request) (any, error) {
	ms, err := a.query.Models(r.Context(), r.PathValue("project"))
	if err != nil {
		return nil, err
	}
	out := make([]explore, 0, len(ms))
	for _, m := range ms {
		e := explore{Name: m.Name, Description: m.Description, Dimensions: []exploreField{}, Metrics: []exploreField{}, PreAggregates: []string{}}
		for i := range m.Dimensions {
			d := &m.Dimensions[i]
			e.Dimensions = append(e.Dimensions, exploreField{FieldID: semantic.FieldID(m.Name, d.Name, ""), Name: d.Name, Type: string(d.Type), Description: d.Description})
			for _, g := range semantic.DimGrains(d) {
				e.Dimensions = append(e.Dimensions, exploreField{FieldID: semantic.FieldID(m.Name, d.Name, g), Name: d.Name,
					Type: string(semantic.DimResultType(d, g)), Grain: string(g), Description: d.Description})
			}
		}
		for _, mt := range m.Metrics {
			e.Metrics = append(e.Metrics, exploreField{FieldID: semantic.FieldID(m.Name, mt.Name, ""), Name: mt.Name, Type: string(mt.Type), Description: mt.Description})
		}
		for _, p := range m.PreAggregates {
			e.PreAggregates = append(e.PreAggregates, p.Name)
		}
		out = append(out, e)
	}
	return map[string]any{"explores": out}, nil
}
