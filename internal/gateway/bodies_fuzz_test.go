package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

var gatewayFuzzRoutes = []string{
	"POST /api/internal/callback",
	"POST /api/auth/login",
	"POST /noetl/auth/login",
	"POST /api/auth/logout",
	"POST /ingress/hook",
	"POST /noetl/execute",
}

// The gateway's request bodies (callbacks, logins, webhooks, the proxied
// execute): whatever the bytes, a JSON answer that is not a 500, and the
// gateway keeps serving. The upstream answers as an open Millrace server.
func FuzzGatewayBodies(f *testing.F) {
	up := openUpstream(f, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		writeJSON(w, 200, map[string]any{"execution_id": "1", "status": "running"})
	})
	cfg := testConfig(f, up.URL, embeddedNATS(f).URL())
	_, ts := startGateway(f, cfg)
	for i := range gatewayFuzzRoutes {
		f.Add(uint8(i), []byte(`{}`))
	}
	f.Add(uint8(0), []byte(`{"request_id":"r1","execution_id":"12","status":"COMPLETED","data":{"a":1}}`))
	f.Add(uint8(0), []byte(`{"request_id":"r1","execution_id":99999999999999999999,"error":{"message":"x"}}`))
	f.Add(uint8(1), []byte(`{"auth0_token":"x","session_duration_hours":-1}`))
	f.Add(uint8(4), []byte(`{"a":"\u0000"}`))
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		method, path, _ := strings.Cut(gatewayFuzzRoutes[int(route)%len(gatewayFuzzRoutes)], " ")
		req, err := http.NewRequest(method, ts.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusInternalServerError {
			t.Fatalf("%s %s %q: 500 %s", method, path, body, data)
		}
		if len(data) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && !json.Valid(data) {
			t.Fatalf("%s %s %q: invalid JSON answer %q", method, path, body, data)
		}
	})
}
