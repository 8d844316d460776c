package tools

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// NoETL's http keys: endpoint, json, payload, data, verify_ssl,
// follow_redirects and auth.

func TestHTTPEndpointIsURL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := map[string]any{"kind": "http", "endpoint": b.url + "/echo", "method": "POST"}
	if got := echoed(t, runOK(t, t.Context(), cfg))["method"]; got != "POST" {
		t.Fatalf("method = %v", got)
	}
	cfg["url"] = b.url + "/echo"
	if e := runErr(t, t.Context(), cfg); e.Kind != ErrorKindConfig || !strings.Contains(e.Message, `"endpoint" and "url"`) {
		t.Fatalf("url and endpoint together: %+v", e)
	}
}

func TestHTTPNoETLBodies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	form := map[string]any{"Content-Type": "application/x-www-form-urlencoded"}
	tests := []struct {
		name             string
		extra            []any
		wantType, wantBd string
		wantQuery        string
	}{
		{"json map", []any{"method", "POST", "json", map[string]any{"a": 1.0}}, "application/json", `{"a":1}`, ""},
		{"json string is encoded", []any{"method", "POST", "json", "hi"}, "application/json", `"hi"`, ""},
		{"payload post is json", []any{"method", "POST", "payload", map[string]any{"a": "b"}}, "application/json", `{"a":"b"}`, ""},
		{"data put is json", []any{"method", "PUT", "data", map[string]any{"a": "b"}}, "application/json", `{"a":"b"}`, ""},
		{"data form", []any{"method", "POST", "headers", form, "data", map[string]any{"grant_type": "client_credentials", "x": "a b"}},
			"application/x-www-form-urlencoded", "grant_type=client_credentials&x=a+b", ""},
		{"payload get is query", []any{"payload", map[string]any{"q": "x"}, "params", map[string]any{"p": 1.0}}, "", "", "p=1&q=x"},
		{"data delete is query", []any{"method", "DELETE", "data", map[string]any{"id": 7.0}}, "", "", "id=7"},
		{"data string as is", []any{"method", "POST", "data", "raw text"}, "", "raw text", ""},
	}
	for _, tt := range tests {
		got := echoed(t, runOK(t, t.Context(), httpCfg(b.url+"/echo", tt.extra...)))
		if got["content_type"] != tt.wantType || got["body"] != tt.wantBd || got["query"] != tt.wantQuery {
			t.Errorf("%s: server saw %#v", tt.name, got)
		}
	}
	e := runErr(t, t.Context(), httpCfg(b.url+"/echo", "body", "a", "json", map[string]any{}))
	if e.Kind != ErrorKindConfig || !strings.Contains(e.Message, `"json" and "body"`) {
		t.Fatalf("body and json together: %+v", e)
	}
}

func TestHTTPVerifySSL(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secure")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// The test server's certificate is self-signed: verified, it fails.
	if e := runErr(t, t.Context(), httpCfg(srv.URL)); !strings.Contains(e.Message, "certificate") {
		t.Fatalf("verified self-signed: %+v", e)
	}
	res := runOK(t, t.Context(), httpCfg(srv.URL, "verify_ssl", false))
	if res["body"] != "secure" {
		t.Fatalf("verify_ssl false: %#v", res)
	}
	if e := runErr(t, t.Context(), httpCfg(srv.URL, "verify_ssl", "maybe")); e.Kind != ErrorKindConfig {
		t.Fatalf("verify_ssl maybe: %+v", e)
	}
}

func TestHTTPFollowRedirects(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/from", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/to", http.StatusFound) })
	mux.HandleFunc("/to", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "arrived") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if res := runOK(t, t.Context(), httpCfg(srv.URL+"/from")); res["status"] != 200 || res["body"] != "arrived" {
		t.Fatalf("default follows: %#v", res)
	}
	res := runOK(t, t.Context(), httpCfg(srv.URL+"/from", "follow_redirects", false))
	if res["status"] != http.StatusFound || res["headers"].(map[string]any)["location"] != "/to" {
		t.Fatalf("follow_redirects false: %#v", res)
	}
}

func TestHTTPAuth(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/h", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"auth": r.Header.Get("Authorization"), "key": r.Header.Get("X-Key")})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ctx := WithEnv(t.Context(), credEnv{
		"tok":   {"token": "s3cret"},
		"basic": {"type": "basic", "username": "u", "password": "p"},
		"key":   {"api_key": "k1"},
	})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:p"))
	tests := []struct {
		name      string
		auth      any
		auth2, k2 string
	}{
		{"credential name, bearer by its token", "tok", "Bearer s3cret", ""},
		{"credential name, typed basic", "basic", basic, ""},
		{"typed mapping naming a credential", map[string]any{"type": "bearer", "credential": "tok"}, "Bearer s3cret", ""},
		{"inline bearer", map[string]any{"type": "bearer", "token": "t0"}, "Bearer t0", ""},
		{"inline basic", map[string]any{"type": "basic", "username": "u", "password": "p"}, basic, ""},
		{"api key with header", map[string]any{"type": "api_key", "credential": "key", "header_name": "X-Key"}, "", "k1"},
		{"NoETL alias form", map[string]any{"api": map[string]any{"type": "bearer", "credential": "tok"}}, "Bearer s3cret", ""},
	}
	for _, tt := range tests {
		res := runOK(t, ctx, httpCfg(srv.URL+"/h", "auth", tt.auth))
		got := res["body"].(map[string]any)
		if got["auth"] != tt.auth2 || got["key"] != tt.k2 {
			t.Errorf("%s: server saw %#v", tt.name, got)
		}
	}
	for _, bad := range []any{
		"missing",
		map[string]any{"type": "oauth2", "token": "x"},
		map[string]any{"openai": map[string]any{"type": "bearer", "provider": "secret_manager", "key": "x"}},
		7.0,
	} {
		if e := runErr(t, ctx, httpCfg(srv.URL+"/h", "auth", bad)); e.Message == "" {
			t.Errorf("auth %#v accepted", bad)
		}
	}
	if e := runErr(t, ctx, httpCfg(srv.URL+"/h", "auth", map[string]any{"type": "bearer", "provider": "gcp"})); !strings.Contains(e.Message, "no provider keychains") {
		t.Errorf("provider auth: %+v", e)
	}
}
