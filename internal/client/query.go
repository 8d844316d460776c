package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/millrace/millrace/internal/api"
)

// ProjectPut creates or replaces a project.
func (c *Client) ProjectPut(ctx context.Context, name string, conn api.WarehouseConn) (api.Project, error) {
	var out api.Project
	err := c.do(ctx, "POST", "/api/v2/projects", api.ProjectRequest{Name: name, Warehouse: conn}, &out)
	return out, err
}

// QuerySubmit submits SQL to a project.
func (c *Client) QuerySubmit(ctx context.Context, project, sql, lane string, invalidate bool) (api.Submitted, error) {
	var out api.Submitted
	in := api.QuerySubmit{SQL: sql, Context: lane, InvalidateCache: invalidate}
	err := c.submit(ctx, "/api/v2/projects/"+url.PathEscape(project)+"/query/sql", in, &out)
	return out, err
}

// QueryGet polls a query; page 0 and pageSize 0 take the server defaults.
func (c *Client) QueryGet(ctx context.Context, project, uuid string, page, pageSize int) (api.QueryPage, error) {
	var out api.QueryPage
	q := url.Values{}
	if page > 0 {
		q.Set("page", fmt.Sprint(page))
	}
	if pageSize > 0 {
		q.Set("pageSize", fmt.Sprint(pageSize))
	}
	path := "/api/v2/projects/" + url.PathEscape(project) + "/query/" + uuid
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	err := c.do(ctx, "GET", path, nil, &out)
	return out, err
}

// QueryCancel cancels a query.
func (c *Client) QueryCancel(ctx context.Context, project, uuid string) error {
	return c.do(ctx, "POST", "/api/v2/projects/"+url.PathEscape(project)+"/query/"+uuid+"/cancel", struct{}{}, nil)
}

// QueryClaim is the worker's claim of a queued query.
func (c *Client) QueryClaim(ctx context.Context, uuid, worker string) (api.ClaimedQuery, error) {
	var out api.ClaimedQuery
	err := c.do(ctx, "POST", "/api/v2/internal/queries/"+uuid+"/claim", map[string]string{"worker_id": worker}, &out)
	return out, err
}

// QueryStatus returns a query's current status (workers use it to notice a
// cancel).
func (c *Client) QueryStatus(ctx context.Context, uuid string) (api.QueryStatus, error) {
	var out api.QueryRecord
	err := c.do(ctx, "GET", "/api/v2/internal/queries/"+uuid, nil, &out)
	return out.Status, err
}

// QueryHeartbeat tells the server the worker still runs the query; 409
// means it should stop (cancelled or re-queued).
func (c *Client) QueryHeartbeat(ctx context.Context, uuid, worker string) error {
	return c.do(ctx, "POST", "/api/v2/internal/queries/"+uuid+"/heartbeat", map[string]string{"worker_id": worker}, nil)
}

// QueryFail records a worker's failure.
func (c *Client) QueryFail(ctx context.Context, uuid, worker, msg string) error {
	return c.do(ctx, "POST", "/api/v2/internal/queries/"+uuid+"/fail", map[string]string{"worker_id": worker, "error": msg}, nil)
}

// QueryUpload streams a worker's results (NDJSON) to the server.
func (c *Client) QueryUpload(ctx context.Context, uuid, worker string, body io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, "POST", c.Base+"/api/v2/internal/queries/"+uuid+"/results?worker_id="+url.QueryEscape(worker), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	// Uploads can be long; no client timeout beyond ctx.
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("upload results to %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(resp.Body)
		var env struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &env) == nil && env.Error.Code != "" {
			return &Error{Status: resp.StatusCode, Code: env.Error.Code, Message: env.Error.Message}
		}
		return &Error{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(data))}
	}
	return nil
}
