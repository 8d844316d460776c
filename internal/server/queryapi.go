package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/query"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/warehouse"
	"github.com/millrace/millrace/internal/wire"
)

// WithQuery enables the warehouse-query API (/api/v2).
func WithQuery(q *query.Service) Option {
	return func(a *API) { a.query = q }
}

func (a *API) queryRoutes() {
	if a.query == nil {
		return
	}
	a.route("POST /api/v2/projects", auth.Admins, a.projectPut)
	a.route("GET /api/v2/projects", auth.Readers, a.projectList)
	a.route("POST /api/v2/projects/{project}/query/sql", auth.Operators, a.querySubmit)
	a.route("GET /api/v2/projects/{project}/query/history", auth.Readers, a.queryHistory)
	a.route("GET /api/v2/projects/{project}/query/{uuid}", auth.Readers, a.queryGet)
	a.route("POST /api/v2/projects/{project}/query/{uuid}/cancel", auth.Operators, a.queryCancel)
	a.handle("GET /api/v2/projects/{project}/query/{uuid}/results", auth.Readers, a.queryResults)
	// Worker protocol: claim, status, fail, and a streamed result upload
	// (exempt from the body limit: results can be large).
	a.route("POST /api/v2/internal/queries/{uuid}/claim", auth.Workers, a.queryClaim)
	a.route("GET /api/v2/internal/queries/{uuid}", auth.Workers, a.queryInternalGet)
	a.route("POST /api/v2/internal/queries/{uuid}/fail", auth.Workers, a.queryFail)
	a.route("POST /api/v2/internal/queries/{uuid}/heartbeat", auth.Workers, a.queryHeartbeat)
	a.handle("POST /api/v2/internal/queries/{uuid}/results", auth.Workers, a.queryUpload)
	a.metricRoutes()
}

func (a *API) projectPut(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.ProjectRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	p, err := a.query.PutProject(r.Context(), body.Name, warehouse.Conn{Type: body.Warehouse.Type, URL: body.Warehouse.URL})
	if err != nil {
		return nil, err
	}
	return wire.Project(p), nil
}

func (a *API) projectList(w http.ResponseWriter, r *http.Request) (any, error) {
	list, err := a.query.Projects(r.Context())
	out := make([]api.Project, 0, len(list))
	for _, p := range list {
		out = append(out, wire.Project(p))
	}
	return map[string]any{"projects": out}, err
}

func (a *API) querySubmit(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.QuerySubmit
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	req := query.SubmitRequest{Project: r.PathValue("project"), SQL: body.SQL,
		Lane: body.Context, InvalidateCache: body.InvalidateCache, User: r.Header.Get("X-Millrace-User")}
	ctx, idem, err := a.idempotent(r, store.IdemQuery, req)
	if err != nil {
		return nil, err
	}
	q, err := a.query.Submit(ctx, req)
	if v, ok, err := a.replayed(w, r, idem, err); ok || err != nil {
		return v, err
	}
	return api.Submitted{QueryUUID: q.QueryUUID, CacheMetadata: api.CacheMetadata{CacheHit: q.CacheHit}}, nil
}

// pageParams reads page and pageSize (0 = default).
func pageParams(r *http.Request) (int, int, error) {
	get := func(name string) (int, error) {
		v := r.URL.Query().Get(name)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, apierr.New(apierr.BadRequest, "%s must be an integer, got %q", name, v)
		}
		return n, nil
	}
	page, err := get("page")
	if err != nil {
		return 0, 0, err
	}
	size, err := get("pageSize")
	if err != nil {
		return 0, 0, err
	}
	if size != 0 && (size < 1 || size > query.MaxPageSize) {
		return 0, 0, apierr.New(apierr.BadRequest, "pageSize must be between 1 and %d, got %d", query.MaxPageSize, size)
	}
	if page < 0 {
		return 0, 0, apierr.New(apierr.BadRequest, "page must be >= 1, got %d", page)
	}
	return page, size, nil
}

func (a *API) queryGet(w http.ResponseWriter, r *http.Request) (any, error) {
	page, size, err := pageParams(r)
	if err != nil {
		return nil, err
	}
	_, q, err := a.query.Get(r.Context(), r.PathValue("project"), r.PathValue("uuid"))
	if err != nil {
		return nil, err
	}
	out := map[string]any{"queryUuid": q.QueryUUID, "status": q.Status}
	if pa := query.PreAggMeta(q); pa != nil {
		// A metric query says how it is routed from the start: whether a
		// pre-aggregate serves it (and which build), or why not.
		out["cacheMetadata"] = api.CacheMetadata{CacheHit: q.CacheHit, PreAggregate: pa}
	}
	switch q.Status {
	case api.QueryReady:
	case api.QueryError:
		out["error"] = q.Error
		return out, nil
	default:
		return out, nil // pending, queued, executing, cancelled, expired
	}
	p, err := a.query.ResultsPage(r.Context(), q, page, size)
	if err != nil {
		return nil, err
	}
	out["rows"], out["columns"], out["totalResults"], out["totalPageCount"] = p.Rows, p.Columns, p.TotalResults, p.TotalPageCount
	out["page"], out["pageSize"], out["nextPage"], out["previousPage"] = p.Page, p.PageSize, p.NextPage, p.PreviousPage
	if q.StartedAt != nil && q.EndedAt != nil {
		out["initialQueryExecutionMs"] = q.EndedAt.Sub(*q.StartedAt).Milliseconds()
	}
	out["cacheMetadata"] = api.CacheMetadata{CacheHit: q.CacheHit, PreAggregate: query.PreAggMeta(q)}
	return out, nil
}

func (a *API) queryCancel(w http.ResponseWriter, r *http.Request) (any, error) {
	q, err := a.query.Cancel(r.Context(), r.PathValue("project"), r.PathValue("uuid"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"queryUuid": q.QueryUUID, "status": q.Status}, nil
}

func (a *API) queryHistory(w http.ResponseWriter, r *http.Request) (any, error) {
	page, size, err := pageParams(r)
	if err != nil {
		return nil, err
	}
	if page == 0 {
		page = 1
	}
	if size == 0 {
		size = DefaultPageSize
	}
	list, total, err := a.query.History(r.Context(), r.PathValue("project"), (page-1)*size, size)
	if err != nil {
		return nil, err
	}
	out := make([]api.QueryHistoryEntry, 0, len(list))
	for _, q := range list {
		e := api.QueryHistoryEntry{QueryUUID: q.QueryUUID, Status: q.Status, SQL: q.SQL, Context: q.Lane,
			CacheHit: q.CacheHit, TotalResults: q.TotalRows, Error: q.Error, CreatedAt: q.CreatedAt}
		if pa := query.PreAggMeta(q); pa != nil {
			e.CacheMetadata = &api.CacheMetadata{CacheHit: q.CacheHit, PreAggregate: pa}
			e.MetricQuery = query.MetricQueryOf(q)
		}
		out = append(out, e)
	}
	return api.QueryHistory{Queries: out, Total: total, Page: page, PageSize: size}, nil
}

// queryResults streams every row as NDJSON.
func (a *API) queryResults(w http.ResponseWriter, r *http.Request) {
	_, q, err := a.query.Get(r.Context(), r.PathValue("project"), r.PathValue("uuid"))
	if err == nil {
		// Before any row is written, so an expired result is a 410 and
		// not an empty 200.
		err = a.query.Readable(r.Context(), q)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sw := &startedWriter{w: w}
	if err := a.query.StreamResults(r.Context(), q, sw); err != nil {
		if !sw.started {
			a.fail(w, r, err) // e.g. the result files are gone: 410
			return
		}
		a.log.Warn("streaming results failed", "query", q.QueryUUID, "err", err)
	}
}

// startedWriter sets the NDJSON content type on the first write and
// remembers that the response has begun.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/x-ndjson")
	}
	return s.w.Write(p)
}

func (a *API) queryClaim(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.ClaimRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if body.WorkerID == "" {
		return nil, apierr.New(apierr.BadRequest, "worker_id is required")
	}
	c, err := a.query.Claim(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()))
	if err != nil {
		return nil, err
	}
	return api.ClaimedQuery{QueryUUID: c.QueryUUID, SQL: c.SQL, Lane: c.Lane,
		Warehouse: api.WarehouseConn{Type: c.Warehouse.Type, URL: c.Warehouse.URL}, PreAggregate: c.PreAggregate}, nil
}

func (a *API) queryInternalGet(w http.ResponseWriter, r *http.Request) (any, error) {
	q, err := store.ReadValue(r.Context(), a.st, func(qq store.Querier) (store.Query, error) {
		return qq.QueryGet(r.Context(), r.PathValue("uuid"))
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.New(apierr.QueryNotFound, "query %s does not exist", r.PathValue("uuid"))
	}
	if err != nil {
		return nil, err
	}
	q.SQL = "" // workers already have it; keep the reply small
	return wire.Query(q), nil
}

func (a *API) queryHeartbeat(w http.ResponseWriter, r *http.Request) (any, error) {
	var body api.ClaimRequest
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	q, err := a.query.Heartbeat(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()))
	if err != nil {
		return nil, err
	}
	return map[string]any{"queryUuid": q.QueryUUID, "status": q.Status}, nil
}

func (a *API) queryFail(w http.ResponseWriter, r *http.Request) (any, error) {
	var body struct {
		WorkerID string `json:"worker_id"`
		Error    string `json:"error"`
	}
	if err := decode(r, &body); err != nil {
		return nil, err
	}
	if err := a.query.Fail(r.Context(), r.PathValue("uuid"), body.WorkerID, auth.ClaimTokenID(r.Context()), body.Error); err != nil {
		return nil, err
	}
	return map[string]any{"status": api.QueryError}, nil
}

func (a *API) queryUpload(w http.ResponseWriter, r *http.Request) {
	q, err := a.query.Ingest(r.Context(), r.PathValue("uuid"), r.URL.Query().Get("worker_id"), auth.ClaimTokenID(r.Context()), r.Body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"queryUuid": q.QueryUUID, "status": q.Status, "totalResults": q.TotalRows})
}

// queryHealth adds the query face to health: queued queries with nobody
// pulling them is the stall the seeds warn about.
func (a *API) queryHealth(ctx context.Context, h *api.Health, pulling func(context.Context) (int, error)) {
	if a.query == nil {
		return
	}
	qs, err := a.query.QueueStats(ctx)
	if err != nil {
		return
	}
	if h.Detail == nil {
		h.Detail = &api.HealthDetail{}
	}
	q := wire.QueueStats(qs)
	h.Detail.Queries = &q
	if qs.Queued == 0 || pulling == nil {
		return
	}
	if n, err := pulling(ctx); err == nil && n == 0 {
		h.Status = "degraded"
		h.Detail.QueriesStalled = "queries are queued but no warehouse worker is consuming them; start `millrace worker --stream warehouse` (NATS_ENABLED=true routes queries to NATS)"
	}
}
