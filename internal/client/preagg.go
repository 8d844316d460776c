package client

import (
	"bytes"
	"context"
	"fmt"
	"net/url"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

// The metrics layer and pre-aggregates: models, metric queries, builds
// (public API), and the pre-aggregate worker's protocol.

func projectPath(project string) string { return "/api/v2/projects/" + url.PathEscape(project) }

// ModelsPut stores the models of doc, a YAML or JSON document
// {models: [...]}, in project. A bad definition is a 400 whose message
// lists every problem as request:line:col.
func (c *Client) ModelsPut(ctx context.Context, project string, doc []byte) (api.ModelsPut, error) {
	var out api.ModelsPut
	ct := "application/yaml"
	if t := bytes.TrimSpace(doc); len(t) > 0 && t[0] == '{' {
		ct = "application/json"
	}
	err := c.doRaw(ctx, "POST", projectPath(project)+"/models", ct, bytes.NewReader(doc), &out)
	return out, err
}

// Models lists project's models.
func (c *Client) Models(ctx context.Context, project string) ([]semantic.Model, error) {
	var out api.ModelList
	err := c.do(ctx, "GET", projectPath(project)+"/models", nil, &out)
	return out.Models, err
}

// Model fetches one model.
func (c *Client) Model(ctx context.Context, project, name string) (semantic.Model, error) {
	var out semantic.Model
	err := c.do(ctx, "GET", projectPath(project)+"/models/"+url.PathEscape(name), nil, &out)
	return out, err
}

// ModelDelete removes a model.
func (c *Client) ModelDelete(ctx context.Context, project, name string) error {
	return c.do(ctx, "DELETE", projectPath(project)+"/models/"+url.PathEscape(name), nil, nil)
}

// MetricQuerySubmit submits a metric query; the reply's
// cacheMetadata.preAggregate says whether a pre-aggregate will serve it.
func (c *Client) MetricQuerySubmit(ctx context.Context, project string, in api.MetricQuerySubmit) (api.Submitted, error) {
	var out api.Submitted
	err := c.do(ctx, "POST", projectPath(project)+"/query/metric-query", in, &out)
	return out, err
}

// QueryHistory reads a page (from 1) of project's query history, newest
// first; 0 takes the server's defaults.
func (c *Client) QueryHistory(ctx context.Context, project string, page, pageSize int) (api.QueryHistory, error) {
	var out api.QueryHistory
	q := url.Values{}
	if page > 0 {
		q.Set("page", fmt.Sprint(page))
	}
	if pageSize > 0 {
		q.Set("pageSize", fmt.Sprint(pageSize))
	}
	path := projectPath(project) + "/query/history"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}

// PreAggregates lists project's declared pre-aggregates with their active
// and latest builds.
func (c *Client) PreAggregates(ctx context.Context, project string) ([]api.PreAggInfo, error) {
	var out api.PreAggList
	err := c.do(ctx, "GET", projectPath(project)+"/preaggregates", nil, &out)
	return out.PreAggregates, err
}

// PreAggBuilds lists builds newest first; model and name narrow it ("" for
// all), limit 0 takes the server's default.
func (c *Client) PreAggBuilds(ctx context.Context, project, model, name string, limit int) ([]api.PreAggBuild, error) {
	var out api.PreAggBuildList
	q := url.Values{}
	if model != "" {
		q.Set("model", model)
	}
	if name != "" {
		q.Set("name", name)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	path := projectPath(project) + "/preaggregates/builds"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	err := c.do(ctx, "GET", path, nil, &out)
	return out.Builds, err
}

// PreAggBuild fetches one build.
func (c *Client) PreAggBuild(ctx context.Context, project, uuid string) (api.PreAggBuild, error) {
	var out api.PreAggBuild
	err := c.do(ctx, "GET", projectPath(project)+"/preaggregates/builds/"+url.PathEscape(uuid), nil, &out)
	return out, err
}

// PreAggRefresh starts a build of model's pre-aggregate name (trigger
// manual) and returns its id.
func (c *Client) PreAggRefresh(ctx context.Context, project, model, name string) (api.RefreshStarted, error) {
	var out api.RefreshStarted
	err := c.do(ctx, "POST", projectPath(project)+"/preaggregates/"+url.PathEscape(model)+"/"+url.PathEscape(name)+"/refresh", struct{}{}, &out)
	return out, err
}

// The pre-aggregate worker's protocol (snake_case bodies, like the
// warehouse worker's).

// QueryFallback tells the server that the worker holding query uuid could
// not serve it from its pre-aggregate for a reason that is a miss (f.Code,
// e.g. MATERIALIZATION_MISSING): the server runs it on the warehouse.
func (c *Client) QueryFallback(ctx context.Context, uuid, worker string, f api.QueryFallback) error {
	in := struct {
		WorkerID string `json:"worker_id"`
		api.QueryFallback
	}{worker, f}
	return c.do(ctx, "POST", "/api/v2/internal/queries/"+url.PathEscape(uuid)+"/fallback", in, nil)
}

func buildPath(uuid, action string) string {
	return "/api/v2/internal/preaggregates/builds/" + url.PathEscape(uuid) + "/" + action
}

// BuildClaim takes a queued build; 409 means it is not queued (claimed
// elsewhere, done or superseded).
func (c *Client) BuildClaim(ctx context.Context, uuid, worker string) (api.ClaimedBuild, error) {
	var out api.ClaimedBuild
	err := c.do(ctx, "POST", buildPath(uuid, "claim"), map[string]string{"worker_id": worker}, &out)
	return out, err
}

// BuildHeartbeat keeps a claimed build ours; 409 means it no longer is.
func (c *Client) BuildHeartbeat(ctx context.Context, uuid, worker string) error {
	return c.do(ctx, "POST", buildPath(uuid, "heartbeat"), map[string]string{"worker_id": worker}, nil)
}

// BuildComplete reports a finished build; the server promotes it.
func (c *Client) BuildComplete(ctx context.Context, uuid, worker string, b api.BuildComplete) error {
	in := struct {
		WorkerID string `json:"worker_id"`
		api.BuildComplete
	}{worker, b}
	return c.do(ctx, "POST", buildPath(uuid, "complete"), in, nil)
}

// BuildFail reports a failed build; the previous active build keeps
// serving.
func (c *Client) BuildFail(ctx context.Context, uuid, worker, msg string) error {
	return c.do(ctx, "POST", buildPath(uuid, "fail"), map[string]string{"worker_id": worker, "error": msg}, nil)
}
