package tools

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
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

// endpoint is NoETL's preferred name for url; json, payload and data are
// its body keys. At most one of each group may be given.
var httpKeys = []string{"method", "url", "endpoint", "headers", "params", "body", "json", "payload", "data",
	"timeout", "verify_ssl", "follow_redirects", "auth"}

// httpURLKeys and httpBodyKeys are the keys that say the same thing; the
// validator refuses two of a group on one tool.
var (
	httpURLKeys  = []string{"url", "endpoint"}
	httpBodyKeys = []string{"body", "json", "payload", "data"}
)

// The clients are shared so connections are reused across commands; one per
// combination of verify_ssl and follow_redirects. Timeouts come from each
// request's context.
var httpClients = func() (c [2][2]*http.Client) {
	for verify := range 2 {
		for follow := range 2 {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			if verify == 0 {
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the playbook asked for verify_ssl: false
			}
			cl := &http.Client{Transport: tr}
			if follow == 0 {
				cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			}
			c[verify][follow] = cl
		}
	}
	return c
}()

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

type httpTool struct{}

func (httpTool) Run(ctx context.Context, cfg map[string]any) (any, error) {
	req, timeout, err := buildRequest(cfg)
	if err != nil {
		return nil, err
	}
	if err := applyAuth(ctx, req, cfg["auth"]); err != nil {
		return nil, err
	}
	verify, err := optBoolean(cfg, "http", "verify_ssl", true)
	if err != nil {
		return nil, err
	}
	follow, err := optBoolean(cfg, "http", "follow_redirects", true)
	if err != nil {
		return nil, err
	}
	httpClient := httpClients[b2i(verify)][b2i(follow)]
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
	urlKey, err := oneOf(cfg, "http", httpURLKeys)
	if err != nil {
		return nil, 0, err
	}
	if urlKey == "" {
		urlKey = "url"
	}
	rawURL, err := optString(cfg, "http", urlKey, "")
	if err != nil {
		return nil, 0, err
	}
	if rawURL == "" {
		return nil, 0, configError("http", "url", "(or endpoint) is required: give an absolute http:// or https:// URL")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, 0, configError("http", urlKey, "must be an absolute http:// or https:// URL, got %s", describe(rawURL))
	}
	if err := addParams(u, cfg, "params"); err != nil {
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

	bodyKey, err := oneOf(cfg, "http", httpBodyKeys)
	if err != nil {
		return nil, 0, err
	}
	contentType := ""
	for k, v := range headers {
		if strings.EqualFold(k, "Content-Type") {
			contentType = v
		}
	}
	var body io.Reader
	defaultType := ""
	raw := cfg[bodyKey]
	_, isMap := raw.(map[string]any)
	switch {
	case bodyKey == "":
	case bodyKey == "json":
		// json is always encoded, a string included, as NoETL (httpx) does.
		enc, err := json.Marshal(raw)
		if err != nil {
			return nil, 0, configError("http", bodyKey, "cannot be encoded as JSON: %v", err)
		}
		body = bytes.NewReader(enc)
		defaultType = "application/json"
	case (bodyKey == "payload" || bodyKey == "data") && isMap && !methodHasBody(method):
		// NoETL sends a GET's (HEAD's, DELETE's) payload or data as the
		// query string, since such a request carries no body.
		if err := addParams(u, cfg, bodyKey); err != nil {
			return nil, 0, err
		}
	case (bodyKey == "payload" || bodyKey == "data") && isMap && isFormType(contentType):
		form, err := formValues(raw.(map[string]any), bodyKey)
		if err != nil {
			return nil, 0, err
		}
		body = strings.NewReader(form.Encode())
	default:
		switch b := raw.(type) {
		case nil:
		case string:
			body = strings.NewReader(b)
		default:
			enc, err := json.Marshal(b)
			if err != nil {
				return nil, 0, configError("http", bodyKey, "cannot be encoded as JSON: %v", err)
			}
			body = bytes.NewReader(enc)
			defaultType = "application/json"
		}
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

// addParams appends cfg[key] to the URL's query, keeping any query the URL
// already has. A list value repeats the parameter (a=1&a=2).
func addParams(u *url.URL, cfg map[string]any, key string) error {
	v, ok := cfg[key]
	if !ok || v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return configError("http", key, "must be a map of names to values, got %s", describe(v))
	}
	q, err := formValues(m, key)
	if err != nil {
		return err
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

// formValues encodes m as query or form values. A list value repeats the
// name (a=1&a=2).
func formValues(m map[string]any, key string) (url.Values, error) {
	q := url.Values{}
	for _, k := range sortedKeys(m) {
		vals, ok := m[k].([]any)
		if !ok {
			vals = []any{m[k]}
		}
		for _, item := range vals {
			s, ok := scalarString(item)
			if !ok {
				return nil, configError("http", key, "value for %q must be a string, number, bool or a list of them, got %s", k, describe(item))
			}
			q.Add(k, s)
		}
	}
	return q, nil
}

// oneOf returns which of keys cfg sets (non-null), "" for none, or an error
// naming both when it sets two: they are aliases of one thing.
func oneOf(cfg map[string]any, kind string, keys []string) (string, error) {
	found := ""
	for _, k := range keys {
		if v, ok := cfg[k]; ok && v != nil {
			if found != "" {
				return "", configError(kind, k, "and %q say the same thing; give only one", found)
			}
			found = k
		}
	}
	return found, nil
}

func methodHasBody(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		return false
	}
	return true
}

func isFormType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// applyAuth sets the request's credentials from auth: a credential name, or
// a mapping {type: bearer|basic|api_key, credential: name} whose missing
// fields (token, username, password, api_key, header_name) are read from
// that credential, or NoETL's alias form {name: {type: ..., ...}}. A
// credential read by name alone says its type in a "type" field, or by
// holding token, username and password, or api_key.
func applyAuth(ctx context.Context, req *http.Request, auth any) error {
	switch a := auth.(type) {
	case nil:
		return nil
	case string:
		if a == "" {
			return nil
		}
		return applyAuthSpec(ctx, req, map[string]any{"credential": a})
	case map[string]any:
		if _, ok := a["type"]; ok {
			return applyAuthSpec(ctx, req, a)
		}
		if _, ok := a["credential"]; ok {
			return applyAuthSpec(ctx, req, a)
		}
		for _, alias := range sortedKeys(a) {
			spec, ok := a[alias].(map[string]any)
			if !ok {
				return configError("http", "auth", "entry %q must be a mapping {type, credential, ...}, got %s", alias, describe(a[alias]))
			}
			if err := applyAuthSpec(ctx, req, spec); err != nil {
				return err
			}
		}
		return nil
	}
	return configError("http", "auth", "must be a credential name or a mapping {type, credential}, got %s", describe(auth))
}

func applyAuthSpec(ctx context.Context, req *http.Request, spec map[string]any) error {
	for _, k := range []string{"provider", "source"} {
		if _, ok := spec[k]; ok {
			return configError("http", "auth", "uses %s %s: Millrace has no provider keychains; store the secret with `millrace credential add` and name it with credential", k, describe(spec[k]))
		}
	}
	fields := map[string]any{}
	if name, ok := spec["credential"]; ok {
		s, ok := name.(string)
		if !ok || s == "" {
			return configError("http", "auth", "credential must be a credential name, got %s", describe(name))
		}
		got, err := credentialFields(ctx, "http", s)
		if err != nil {
			return err
		}
		for k, v := range got {
			fields[k] = v
		}
	}
	for k, v := range spec {
		if k != "credential" {
			fields[k] = v
		}
	}
	str := func(k string) string {
		s, _ := scalarString(fields[k])
		return s
	}
	typ := strings.ToLower(str("type"))
	if typ == "" {
		switch {
		case fields["token"] != nil:
			typ = "bearer"
		case fields["api_key"] != nil:
			typ = "api_key"
		case fields["username"] != nil || fields["user"] != nil:
			typ = "basic"
		}
	}
	switch typ {
	case "bearer":
		tok := str("token")
		if tok == "" {
			tok = str("value")
		}
		if tok == "" {
			return configError("http", "auth", "of type bearer has no token")
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case "basic":
		user := str("username")
		if user == "" {
			user = str("user")
		}
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+str("password"))))
	case "api_key":
		key := str("api_key")
		if key == "" {
			key = str("value")
		}
		if key == "" {
			return configError("http", "auth", "of type api_key has no api_key")
		}
		header := str("header_name")
		if header == "" {
			header = "X-API-Key"
		}
		req.Header.Set(header, key)
	default:
		return configError("http", "auth", "type %s is not one of bearer, basic, api_key (a credential read by name may say its type in a \"type\" field)", describe(fields["type"]))
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
