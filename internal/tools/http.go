package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// DefaultHTTPTimeout bounds a request including reading the response.
	DefaultHTTPTimeout = 30 * time.Second
	// httpBodyCap is the largest response body a result carries.
	httpBodyCap = 10 << 20
	// httpSnippet is how much of an error response body a message quotes.
	httpSnippet = 200
)

var httpKeys = []string{"method", "url", "headers", "params", "body", "timeout"}

// httpClient is shared so connections are reused across commands. Timeouts
// come from each request's context.
var httpClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

type httpTool struct{}

func (httpTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	req, timeout, err := buildRequest(cfg)
	if err != nil {
		return nil, err
	}
	reqCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req = req.WithContext(reqCtx)
	where := req.Method + " " + redactURL(req.URL)

	// failed classifies transport errors: the server may be fine next time.
	failed := func(stage string, err error) error {
		switch {
		case ctx.Err() != nil:
			return &Error{Kind: ErrorKindCanceled, Retryable: true,
				Message: fmt.Sprintf("%s was stopped because the worker canceled it: %v", where, context.Cause(ctx))}
		case reqCtx.Err() != nil:
			return &Error{Kind: "http", Retryable: true,
				Message: fmt.Sprintf("%s timed out after %s while %s; raise timeout if the server is slow", where, timeout, stage)}
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the URL, query string and all
		}
		return &Error{Kind: "http", Retryable: true,
			Message: fmt.Sprintf("%s failed while %s: %v", where, stage, err)}
	}

	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, failed("sending the request", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, httpBodyCap+1))
	if err != nil {
		return nil, failed("reading the response", err)
	}
	truncated := len(raw) > httpBodyCap
	if truncated {
		raw = raw[:httpBodyCap]
	}

	headers := make(map[string]any, len(resp.Header))
	for k, vs := range resp.Header {
		if len(vs) > 0 {
			headers[strings.ToLower(k)] = vs[0]
		}
	}
	// status_code too: NoETL playbooks read it under that name.
	result := map[string]any{"status": resp.StatusCode, "status_code": resp.StatusCode, "headers": headers}
	isJSON := isJSONType(resp.Header.Get("Content-Type"))
	var body any = string(raw)
	switch {
	case truncated:
		body = fmt.Sprintf("%s\n[truncated: body exceeds %d bytes]", raw, httpBodyCap)
	case isJSON && len(bytes.TrimSpace(raw)) > 0:
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // keep 64-bit ids exact
		var v any
		// A body that claims JSON but isn't stays a string rather than
		// failing the step, so the caller can still see it.
		if dec.Decode(&v) == nil && dec.Decode(new(any)) == io.EOF {
			body = v
		}
	}
	result["body"] = body

	if resp.StatusCode >= 400 {
		snippet := strings.ToValidUTF8(strings.TrimSpace(string(raw[:min(len(raw), httpSnippet)])), "")
		if len(raw) > httpSnippet {
			snippet += "..."
		}
		return nil, &Error{Kind: "http", Result: result,
			Retryable: resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests,
			Message:   fmt.Sprintf("%s returned %s: %s", where, resp.Status, snippet)}
	}
	if truncated && isJSON {
		return nil, &Error{Kind: "http", Result: result,
			Message: fmt.Sprintf("%s returned a JSON body larger than %d bytes, which cannot be kept whole; request a smaller page", where, httpBodyCap)}
	}
	return result, nil
}

// buildRequest turns the config into a request (without context) and its
// timeout.
func buildRequest(cfg map[string]any) (*http.Request, time.Duration, error) {
	method, err := optString(cfg, "http", "method", http.MethodGet)
	if err != nil {
		return nil, 0, err
	}
	method = strings.ToUpper(strings.TrimSpace(method))
	if method == "" {
		method = http.MethodGet
	}
	rawURL, err := optString(cfg, "http", "url", "")
	if err != nil {
		return nil, 0, err
	}
	if rawURL == "" {
		return nil, 0, configError("http", "url", "is required: give an absolute http:// or https:// URL")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, 0, configError("http", "url", "must be an absolute http:// or https:// URL, got %s", describe(rawURL))
	}
	if err := addParams(u, cfg); err != nil {
		return nil, 0, err
	}
	headers, err := optStringMap(cfg, "http", "headers")
	if err != nil {
		return nil, 0, err
	}
	timeout, err := optSeconds(cfg, "http", "timeout", DefaultHTTPTimeout)
	if err != nil {
		return nil, 0, err
	}

	var body io.Reader
	defaultType := ""
	switch b := cfg["body"].(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return nil, 0, configError("http", "body", "cannot be encoded as JSON: %v", err)
		}
		body = bytes.NewReader(enc)
		defaultType = "application/json"
	}

	req, err := http.NewRequest(method, u.String(), body)
	if err != nil {
		return nil, 0, configError("http", "method", "is not a valid HTTP method: %v", err)
	}
	for _, k := range sortedKeys(headers) {
		req.Header.Set(k, headers[k])
	}
	if defaultType != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", defaultType)
	}
	return req, timeout, nil
}

// addParams appends "params" to the URL's query, keeping any query the URL
// already has. A list value repeats the parameter (a=1&a=2).
func addParams(u *url.URL, cfg map[string]any) error {
	v, ok := cfg["params"]
	if !ok || v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return configError("http", "params", "must be a map of names to values, got %s", describe(v))
	}
	q := url.Values{}
	for _, k := range sortedKeys(m) {
		vals, ok := m[k].([]any)
		if !ok {
			vals = []any{m[k]}
		}
		for _, item := range vals {
			s, ok := scalarString(item)
			if !ok {
				return configError("http", "params", "value for %q must be a string, number, bool or a list of them, got %s", k, describe(item))
			}
			q.Add(k, s)
		}
	}
	if enc := q.Encode(); enc != "" {
		if u.RawQuery != "" {
			u.RawQuery += "&" + enc
		} else {
			u.RawQuery = enc
		}
	}
	return nil
}

func isJSONType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// redactURL drops credentials and the query string, which often carry
// tokens, so messages are safe to store in the event log.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	c.Fragment = ""
	return c.String()
}
