// Package client is the Go client of Millrace's HTTP API, used by workers
// and the CLI. It speaks package api's types and nothing of the server's.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/backoff"
	"github.com/millrace/millrace/internal/telemetry"
)

// Client talks to one server.
type Client struct {
	Base string
	HTTP *http.Client
	// Token is the API token (or session) every request made through HTTP
	// carries as Authorization: Bearer; empty sends none (a server with
	// MILLRACE_AUTH=none). Set it before the first request.
	Token string
	// Retry is how retryable answers are retried (retry.go); New sets
	// DefaultRetry, the zero value retries nothing.
	Retry Retry
}

// New returns a client for base (e.g. http://127.0.0.1:8082).
func New(base string) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256 // a worker talks to one server from many goroutines
	c := &Client{Base: strings.TrimRight(base, "/"), Retry: DefaultRetry}
	// The token rides in the transport, so every request made with c.HTTP
	// carries it, copies of the http.Client (long uploads) included.
	c.HTTP = &http.Client{Transport: &bearer{next: tr, c: c}, Timeout: 30 * time.Second}
	return c
}

// WithTracer makes a client span of every request the client sends and
// puts its traceparent on the request, so that the server's span is its
// child; the span is a child of the request context's. A nil tr (tracing
// off) changes nothing. Call it before the first request.
func (c *Client) WithTracer(tr trace.Tracer) *Client {
	c.HTTP.Transport = telemetry.Transport(tr, c.HTTP.Transport)
	return c
}

// WithToken sets the client's token and returns the client.
func (c *Client) WithToken(token string) *Client {
	c.Token = strings.TrimSpace(token)
	return c
}

// bearer adds the client's token to requests that carry no Authorization
// header of their own.
type bearer struct {
	next http.RoundTripper
	c    *Client
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if b.c.Token == "" || req.Header.Get("Authorization") != "" {
		return b.next.RoundTrip(req)
	}
	r := req.Clone(req.Context()) // a RoundTripper must not change its request
	r.Header.Set("Authorization", "Bearer "+b.c.Token)
	return b.next.RoundTrip(r)
}

// CloseIdleConnections lets the transport under the token wrapper drop
// idle connections (http.Client.CloseIdleConnections asks the transport).
func (b *bearer) CloseIdleConnections() {
	if t, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// Error is an API error response.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// StatusOf returns the HTTP status of an API error, or 0 for transport
// errors (server unreachable).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return c.doRaw(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.doRaw(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// doRaw is do with a body that is not JSON (a YAML document): body is sent
// as contentType when not nil.
func (c *Client) doRaw(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	return c.send(ctx, method, path, contentType, nil, body, out)
}

// send makes the request, again while the answer is retryable (retry.go)
// and c.Retry allows; h are headers of the request's own (an
// Idempotency-Key makes a submit safe to retry).
func (c *Client) send(ctx context.Context, method, path, contentType string, h http.Header, body io.Reader, out any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = io.ReadAll(body); err != nil {
			return err
		}
	}
	b := backoff.Backoff{Min: c.Retry.Min, Max: c.Retry.Max}
	began := time.Now()
	for {
		again, after, err := c.once(ctx, method, path, contentType, h, data, body != nil, out)
		if err == nil || !again || c.Retry.MaxElapsed <= 0 || !c.Retry.wait(ctx, &b, began, after) {
			return err
		}
	}
}

// once is one attempt; again says whether another may follow, after the
// server's Retry-After.
func (c *Client) once(ctx context.Context, method, path, contentType string, h http.Header, data []byte, hasBody bool, out any) (again bool, after time.Duration, err error) {
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return false, 0, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if hasBody {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		again, _ = retryable(req, nil, nil, err)
		return again, 0, fmt.Errorf("reach millrace server at %s: %w (is it running? check SERVER_API_URL / --server)", c.Base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 300 && out != nil {
		// Straight from the body: reading it whole first would hold the
		// reply twice (the read buffer and the decoder's). Exact numbers:
		// ids and warehouse values can exceed 2^53.
		dec := json.NewDecoder(resp.Body)
		dec.UseNumber()
		if err := dec.Decode(out); err != nil {
			return false, 0, fmt.Errorf("decode response of %s %s from %s: %w", method, path, c.Base, err)
		}
		// What is left (the encoder's newline) must be read for the
		// connection to be reused.
		_, _ = io.Copy(io.Discard, resp.Body)
		return false, 0, nil
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		again, _ = retryable(req, nil, nil, err)
		return again, 0, fmt.Errorf("read response from %s: %w", c.Base, err)
	}
	if resp.StatusCode < 300 {
		return false, 0, nil // out == nil: the reply is not wanted
	}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &Error{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(raw))}
	if json.Unmarshal(raw, &env) == nil && env.Error.Code != "" {
		e = &Error{Status: resp.StatusCode, Code: env.Error.Code, Message: env.Error.Message}
	}
	again, after = retryable(req, resp, e, nil)
	return again, after, e
}

// Register stores a playbook.
func (c *Client) Register(ctx context.Context, content string) (api.Registered, error) {
	return c.RegisterFile(ctx, "", content)
}

// RegisterFile registers content read from file; the server names file in
// the problems of an invalid playbook.
func (c *Client) RegisterFile(ctx context.Context, file, content string) (api.Registered, error) {
	var out api.Registered
	err := c.do(ctx, "POST", "/api/catalog/register", api.RegisterRequest{Content: content, File: file}, &out)
	return out, err
}

// Catalog lists the latest version of every playbook.
func (c *Client) Catalog(ctx context.Context) ([]api.CatalogEntry, error) {
	var out api.CatalogList
	err := c.do(ctx, "GET", "/api/catalog", nil, &out)
	return out.Entries, err
}

// CatalogGet fetches one playbook version (0 = latest) with its content.
func (c *Client) CatalogGet(ctx context.Context, path string, version int) (api.CatalogEntry, error) {
	var out api.CatalogEntry
	err := c.do(ctx, "GET", fmt.Sprintf("/api/catalog/%s?version=%d", path, version), nil, &out)
	return out, err
}

// Execute starts path (version 0 = latest) with payload overriding workload.
func (c *Client) Execute(ctx context.Context, path string, version int, payload map[string]any) (api.Started, error) {
	return c.ExecuteChild(ctx, path, version, payload, 0)
}

// ExecuteChild starts a child execution of parent (0 = none).
func (c *Client) ExecuteChild(ctx context.Context, path string, version int, payload map[string]any, parent int64) (api.Started, error) {
	return c.Start(ctx, api.ExecuteRequest{Path: path, Version: version, Payload: payload, ParentExecutionID: parent})
}

// Start starts the execution in (a keyed child when in.ParentCommandID is
// set: a repeat returns the child the first start made).
func (c *Client) Start(ctx context.Context, in api.ExecuteRequest) (api.Started, error) {
	in.Version, in.ParentExecutionID = max(in.Version, 0), max(in.ParentExecutionID, 0)
	var out api.Started
	err := c.submit(ctx, "/api/execute", in, &out)
	return out, err
}

// Execution fetches one execution.
func (c *Client) Execution(ctx context.Context, id int64) (api.Execution, error) {
	var out api.Execution
	err := c.do(ctx, "GET", fmt.Sprintf("/api/executions/%d", id), nil, &out)
	return out, err
}

// Executions lists executions newest first.
func (c *Client) Executions(ctx context.Context, page, size int) (api.ExecutionPage, error) {
	return c.ExecutionsFiltered(ctx, page, size, "", "")
}

// ExecutionsFiltered lists the executions of one status and one playbook
// path newest first ("" for any; a path ending in '*' is a prefix). Total
// counts every match.
func (c *Client) ExecutionsFiltered(ctx context.Context, page, size int, status, path string) (api.ExecutionPage, error) {
	var out api.ExecutionPage
	q := url.Values{"page": {fmt.Sprint(page)}, "page_size": {fmt.Sprint(size)}}
	if status != "" {
		q.Set("status", status)
	}
	if path != "" {
		q.Set("path", path)
	}
	err := c.do(ctx, "GET", "/api/executions?"+q.Encode(), nil, &out)
	return out, err
}

// Events lists an execution's events in order.
func (c *Client) Events(ctx context.Context, id int64) ([]api.Event, error) {
	var out api.EventList
	err := c.do(ctx, "GET", fmt.Sprintf("/api/executions/%d/events", id), nil, &out)
	return out.Events, err
}

// Cancel stops a running execution.
func (c *Client) Cancel(ctx context.Context, id int64) (api.Execution, error) {
	return c.CancelCascade(ctx, id, false)
}

// CancelCascade stops a running execution and, with cascade, its running
// child executions.
func (c *Client) CancelCascade(ctx context.Context, id int64, cascade bool) (api.Execution, error) {
	var out api.Execution
	path := fmt.Sprintf("/api/executions/%d/cancel", id)
	if cascade {
		path += "?cascade=true"
	}
	err := c.do(ctx, "POST", path, struct{}{}, &out)
	return out, err
}

// Claim asks for a lease on a command; a 409 means someone else holds it
// or it ended.
func (c *Client) Claim(ctx context.Context, eventID int64, workerID string) (api.Claimed, error) {
	return c.ClaimIn(ctx, eventID, workerID, 0)
}

// ClaimIn is Claim with the command's execution id (from the
// notification), which lets the server keep one execution's writes together.
func (c *Client) ClaimIn(ctx context.Context, eventID int64, workerID string, executionID int64) (api.Claimed, error) {
	return c.claim(ctx, eventID, workerID, executionID, false)
}

// ClaimAndStart claims and records command.started in one request, for a
// worker that runs the command at once.
func (c *Client) ClaimAndStart(ctx context.Context, eventID int64, workerID string, executionID int64) (api.Claimed, error) {
	return c.claim(ctx, eventID, workerID, executionID, true)
}

func (c *Client) claim(ctx context.Context, eventID int64, workerID string, executionID int64, start bool) (api.Claimed, error) {
	var out api.Claimed
	in := api.ClaimRequest{WorkerID: workerID, ExecutionID: max(executionID, 0), Start: start}
	err := c.do(ctx, "POST", fmt.Sprintf("/api/commands/%d/claim", eventID), in, &out)
	return out, err
}

// Command fetches a command with its rendered tool.
func (c *Client) Command(ctx context.Context, eventID int64) (api.Command, error) {
	var out api.Command
	err := c.do(ctx, "GET", fmt.Sprintf("/api/commands/%d", eventID), nil, &out)
	return out, err
}

// Release gives a lease back at once.
func (c *Client) Release(ctx context.Context, eventID int64, workerID string, attempt int) error {
	return c.do(ctx, "POST", fmt.Sprintf("/api/commands/%d/release", eventID),
		api.ClaimRequest{WorkerID: workerID, Attempt: attempt}, nil)
}

// Report posts one event.
func (c *Client) Report(ctx context.Context, r api.Report) (api.Ack, error) {
	var out api.Ack
	err := c.do(ctx, "POST", "/api/events", r, &out)
	return out, err
}

// Health fetches /api/health; a degraded server answers 503 with a body,
// which is returned alongside the error.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var out api.Health
	err := c.do(ctx, "GET", "/api/health", nil, &out)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusServiceUnavailable {
		_ = json.Unmarshal([]byte(e.Message), &out) // the health body, not an error envelope
	}
	return out, err
}

// ClaimBatch claims several commands for workerID in one request (POST
// /api/commands/claim); with start, each claim also records command.started.
// It returns one Claimed and one error per item, in order; an item's error
// answers StatusOf like the single claim's would. The error return is for
// the request as a whole (server unreachable, 413, a malformed reply).
func (c *Client) ClaimBatch(ctx context.Context, workerID string, start bool, items []api.ClaimItem) ([]api.Claimed, []error, error) {
	var out api.ClaimBatch
	in := api.ClaimBatchRequest{WorkerID: workerID, Start: start, Commands: items}
	if err := c.do(ctx, "POST", "/api/commands/claim", in, &out); err != nil {
		return nil, nil, err
	}
	if len(out.Results) != len(items) {
		return nil, nil, fmt.Errorf("claim batch: %d results for %d commands from %s", len(out.Results), len(items), c.Base)
	}
	claims, errs := make([]api.Claimed, len(items)), make([]error, len(items))
	for i, r := range out.Results {
		switch {
		case r.Error != nil:
			errs[i] = itemErr(r.Error, r.HTTPStatus)
		case r.Claimed == nil:
			errs[i] = fmt.Errorf("claim batch: result %d has neither a claim nor an error", i)
		default:
			claims[i] = *r.Claimed
		}
	}
	return claims, errs, nil
}

// ReportBatch posts several reports in one request (POST /api/events/batch).
// It returns one Ack and one error per report, in order, like ClaimBatch.
func (c *Client) ReportBatch(ctx context.Context, reps []api.Report) ([]api.Ack, []error, error) {
	var out api.ReportBatch
	if err := c.do(ctx, "POST", "/api/events/batch", api.ReportBatchRequest{Events: reps}, &out); err != nil {
		return nil, nil, err
	}
	if len(out.Results) != len(reps) {
		return nil, nil, fmt.Errorf("event batch: %d results for %d events from %s", len(out.Results), len(reps), c.Base)
	}
	acks, errs := make([]api.Ack, len(reps)), make([]error, len(reps))
	for i, r := range out.Results {
		if r.Error != nil {
			errs[i] = itemErr(r.Error, r.HTTPStatus)
			continue
		}
		acks[i] = api.Ack{EventID: r.EventID, Status: r.Status}
	}
	return acks, errs, nil
}

// itemErr is one batch item's error, with the status the single-item
// endpoint would have answered.
func itemErr(e *apierr.Error, status int) error {
	if status == 0 {
		status = 500 // an older server that does not say
	}
	return &Error{Status: status, Code: string(e.Code), Message: e.Message}
}
