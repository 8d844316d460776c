package tools

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type httpBundle struct {
	srv *httptest.Server
	url string
}

// setup starts a real HTTP server with routes covering the tool's cases.
func setup(t *testing.T) *httpBundle {
	t.Helper()
	mux := http.NewServeMux()
	// /echo reports what the server received.
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Add("X-Multi", "first")
		w.Header().Add("X-Multi", "second")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method":       r.Method,
			"query":        r.URL.RawQuery,
			"content_type": r.Header.Get("Content-Type"),
			"auth":         r.Header.Get("Authorization"),
			"trace":        r.Header.Get("X-Trace"),
			"body":         string(body),
		})
	})
	mux.HandleFunc("/text", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, `{"looks":"like json but is text"}`)
	})
	mux.HandleFunc("/problem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"title":"no such widget","id":9007199254740993}`)
	})
	mux.HandleFunc("/badjson", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"truncated":`)
	})
	mux.HandleFunc("/unavailable", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/ratelimited", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "slow down", http.StatusTooManyRequests)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.URL.Query().Get("type"))
		_, _ = io.WriteString(w, strings.Repeat("x", httpBodyCap+100))
	})
	// /slow answers only when the client gives up.
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &httpBundle{srv: srv, url: srv.URL}
}

func httpCfg(url string, extra ...any) map[string]any {
	cfg := map[string]any{"kind": "http", "url": url}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i].(string)] = extra[i+1]
	}
	return cfg
}

// echoed returns the /echo response body.
func echoed(t *testing.T, res map[string]any) map[string]any {
	t.Helper()
	if res["status"] != http.StatusOK {
		t.Fatalf("status = %v", res["status"])
	}
	body, ok := res["body"].(map[string]any)
	if !ok {
		t.Fatalf("body = %#v, want decoded JSON object", res["body"])
	}
	return body
}

func TestHTTPMethods(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for cfgMethod, want := range map[string]string{"": "GET", "get": "GET", "POST": "POST", "put": "PUT", "DELETE": "DELETE", "patch": "PATCH"} {
		cfg := httpCfg(b.url + "/echo")
		if cfgMethod != "" {
			cfg["method"] = cfgMethod
		}
		if got := echoed(t, runOK(t, t.Context(), cfg))["method"]; got != want {
			t.Errorf("method %q sent as %v, want %s", cfgMethod, got, want)
		}
	}
}

func TestHTTPParamsEncoding(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := runOK(t, t.Context(), httpCfg(b.url+"/echo?keep=1",
		"params", map[string]any{
			"q":     "a b&c=d",
			"n":     5.0,
			"big":   json.Number("12345678901234567890"),
			"on":    true,
			"multi": []any{"x", "y"},
		}))
	want := "keep=1&big=12345678901234567890&multi=x&multi=y&n=5&on=true&q=a+b%26c%3Dd"
	if got := echoed(t, res)["query"]; got != want {
		t.Fatalf("query = %q, want %q", got, want)
	}
}

func TestHTTPJSONBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := runOK(t, t.Context(), httpCfg(b.url+"/echo",
		"method", "POST",
		"body", map[string]any{"name": "widget", "tags": []any{"a"}}))
	got := echoed(t, res)
	if got["content_type"] != "application/json" || got["body"] != `{"name":"widget","tags":["a"]}` {
		t.Fatalf("server saw %#v", got)
	}

	res = runOK(t, t.Context(), httpCfg(b.url+"/echo", "method", "POST", "body", []any{1.0, 2.0}))
	if got := echoed(t, res); got["body"] != "[1,2]" {
		t.Fatalf("list body sent as %q", got["body"])
	}
}

func TestHTTPRawBodyAndHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := runOK(t, t.Context(), httpCfg(b.url+"/echo",
		"method", "POST",
		"body", "a=1&b=2",
		"headers", map[string]any{
			"Content-Type":  "application/x-www-form-urlencoded",
			"Authorization": "Bearer t0ken",
			"X-Trace":       42.0,
		}))
	got := echoed(t, res)
	if got["body"] != "a=1&b=2" || got["content_type"] != "application/x-www-form-urlencoded" ||
		got["auth"] != "Bearer t0ken" || got["trace"] != "42" {
		t.Fatalf("server saw %#v", got)
	}
	// A user's content type wins over the JSON default.
	res = runOK(t, t.Context(), httpCfg(b.url+"/echo", "method", "POST",
		"body", map[string]any{"a": 1.0}, "headers", map[string]any{"content-type": "application/vnd.api+json"}))
	if got := echoed(t, res); got["content_type"] != "application/vnd.api+json" {
		t.Fatalf("content type = %v", got["content_type"])
	}
}

func TestHTTPResponseHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := runOK(t, t.Context(), httpCfg(b.url+"/echo"))
	h, ok := res["headers"].(map[string]any)
	if !ok || h["x-multi"] != "first" || h["content-type"] != "application/json; charset=utf-8" {
		t.Fatalf("headers = %#v, want lower-case keys with first values", res["headers"])
	}
}

func TestHTTPTextVersusJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := runOK(t, t.Context(), httpCfg(b.url+"/text"))
	if res["body"] != `{"looks":"like json but is text"}` {
		t.Fatalf("text body = %#v, want the raw string", res["body"])
	}
	// Invalid JSON stays readable as a string instead of failing the step.
	res = runOK(t, t.Context(), httpCfg(b.url+"/badjson"))
	if res["body"] != `{"truncated":` {
		t.Fatalf("bad JSON body = %#v", res["body"])
	}
}

func TestHTTP404NotRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := runErr(t, t.Context(), httpCfg(b.url+"/problem?token=secret", "method", "delete"))
	if e.Kind != "http" || e.Retryable {
		t.Fatalf("error = %+v, want non-retryable http", e)
	}
	for _, want := range []string{"DELETE", b.url + "/problem", "404", "no such widget"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	if strings.Contains(e.Message, "secret") {
		t.Errorf("message %q leaks the query string", e.Message)
	}
	res := e.Result.(map[string]any)
	body := res["body"].(map[string]any) // +json is decoded, big ids kept exact
	if res["status"] != 404 || body["id"] != json.Number("9007199254740993") {
		t.Fatalf("Result = %#v", res)
	}
}

func TestHTTPRetryableStatuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for path, status := range map[string]string{"/unavailable": "503", "/ratelimited": "429"} {
		e := runErr(t, t.Context(), httpCfg(b.url+path))
		if e.Kind != "http" || !e.Retryable || !strings.Contains(e.Message, status) {
			t.Errorf("%s: error = %+v, want retryable http naming %s", path, e, status)
		}
		if res := e.Result.(map[string]any); res["body"] == "" {
			t.Errorf("%s: Result lacks the response body", path)
		}
	}
}

func TestHTTPTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	e := runErr(t, t.Context(), httpCfg(b.url+"/slow", "timeout", "0.2"))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("returned after %s", elapsed)
	}
	if e.Kind != "http" || !e.Retryable || !strings.Contains(e.Message, "timed out after 200ms") {
		t.Fatalf("error = %+v, want retryable timeout", e)
	}
}

func TestHTTPCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e := runErr(t, ctx, httpCfg(b.url+"/slow"))
	if e.Kind != ErrorKindCanceled || !e.Retryable {
		t.Fatalf("error = %+v, want retryable %q", e, ErrorKindCanceled)
	}
}

func TestHTTPConnectionRefusedRetryable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	e := runErr(t, t.Context(), httpCfg(url+"/x"))
	if e.Kind != "http" || !e.Retryable || !strings.Contains(e.Message, "refused") {
		t.Fatalf("error = %+v, want retryable connection error", e)
	}
}

func TestHTTPBodyCap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := runOK(t, t.Context(), httpCfg(b.url+"/big", "params", map[string]any{"type": "text/plain"}))
	body := res["body"].(string)
	if !strings.HasSuffix(body, "[truncated: body exceeds 10485760 bytes]") || len(body) > httpBodyCap+100 {
		t.Fatalf("text body len %d, want capped with a marker", len(body))
	}
	e := runErr(t, t.Context(), httpCfg(b.url+"/big", "params", map[string]any{"type": "application/json"}))
	if e.Retryable || !strings.Contains(e.Message, "larger than") {
		t.Fatalf("oversized JSON error = %+v", e)
	}
}

func TestHTTPBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   map[string]any
		field string
	}{
		{map[string]any{"kind": "http"}, `"url"`},
		{httpCfg("ftp://example.com/file"), `"url"`},
		{httpCfg("not a url"), `"url"`},
		{httpCfg("http://"), `"url"`},
		{httpCfg("/relative/path"), `"url"`},
		{map[string]any{"kind": "http", "url": 7.0}, `"url"`},
		{httpCfg("http://127.0.0.1/", "method", "BAD METHOD"), `"method"`},
		{httpCfg("http://127.0.0.1/", "method", 1.0), `"method"`},
		{httpCfg("http://127.0.0.1/", "headers", []any{"a"}), `"headers"`},
		{httpCfg("http://127.0.0.1/", "params", "a=1"), `"params"`},
		{httpCfg("http://127.0.0.1/", "params", map[string]any{"a": map[string]any{}}), `"params"`},
		{httpCfg("http://127.0.0.1/", "timeout", 0.0), `"timeout"`},
		{httpCfg("http://127.0.0.1/", "timeout", "abc"), `"timeout"`},
	} {
		e := runErr(t, t.Context(), tc.cfg)
		if e.Kind != ErrorKindConfig || e.Retryable || !strings.Contains(e.Message, tc.field) {
			t.Errorf("Run(%v) = %+v, want non-retryable config error naming %s", tc.cfg, e, tc.field)
		}
	}
}
