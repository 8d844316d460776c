package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/secret"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
)

// syncBuffer collects the server's log lines from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type credBundle struct {
	t *testing.T
	*servertest.Harness
	logs *syncBuffer
}

// credSetup starts a server (with a random MILLRACE_SECRET_KEY unless mod
// clears it) whose debug log is captured.
func credSetup(t *testing.T, mod func(*config.Server)) *credBundle {
	t.Helper()
	logs := &syncBuffer{}
	h := servertest.StartWithLog(t, func(c *config.Server) {
		c.MaxBodyBytes = 64 << 10
		if mod != nil {
			mod(c)
		}
	}, logs)
	return &credBundle{t: t, Harness: h, logs: logs}
}

// send returns the status and the raw body.
func (b *credBundle) send(method, path, body string) (int, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.Srv.URL()+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp.StatusCode, data
}

func (b *credBundle) sendJSON(method, path, body string) (int, map[string]any) {
	b.t.Helper()
	status, data := b.send(method, path, body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		b.t.Fatalf("%s %s: response is not JSON: %q", method, path, data)
	}
	return status, out
}

// stored reads a credential row as the store holds it.
func (b *credBundle) stored(name string) store.Credential {
	b.t.Helper()
	c, err := store.ReadValue(b.t.Context(), b.Srv.Flow().Store(), func(q store.Querier) (store.Credential, error) {
		return q.CredentialGet(b.t.Context(), name)
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

func TestCredentialLifecycle(t *testing.T) {
	t.Parallel()
	b := credSetup(t, nil)
	ctx := t.Context()

	put, err := b.API.CredentialPut(ctx, api.Credential{Name: "pg_main", Kind: "postgres", Description: "main db",
		Data: map[string]any{"user": "app", "password": "pw1", "port": 5432}})
	if err != nil {
		t.Fatal(err)
	}
	if put.Name != "pg_main" || put.Kind != "postgres" || put.Description != "main db" || put.Data != nil ||
		put.CreatedAt.IsZero() || !put.UpdatedAt.Equal(put.CreatedAt) {
		t.Fatalf("put = %+v; want metadata only with created_at = updated_at", put)
	}

	meta, err := b.API.CredentialGet(ctx, "pg_main", false)
	if err != nil || meta.Data != nil || meta.Kind != "postgres" {
		t.Fatalf("get without include_data = %+v, %v; want metadata only", meta, err)
	}
	full, err := b.API.CredentialGet(ctx, "pg_main", true)
	if err != nil {
		t.Fatal(err)
	}
	if full.Data["user"] != "app" || full.Data["password"] != "pw1" || fmt.Sprint(full.Data["port"]) != "5432" {
		t.Fatalf("get with include_data: data = %v", full.Data)
	}

	// Upsert: same name replaces the data and kind, keeps created_at.
	time.Sleep(5 * time.Millisecond) // so updated_at visibly moves; not for synchronisation
	again, err := b.API.CredentialPut(ctx, api.Credential{Name: "pg_main", Kind: "generic", Data: map[string]any{"password": "pw2"}})
	if err != nil {
		t.Fatal(err)
	}
	if !again.CreatedAt.Equal(put.CreatedAt) || !again.UpdatedAt.After(put.UpdatedAt) || again.Kind != "generic" || again.Description != "" {
		t.Fatalf("replace = %+v; want created_at %v kept, a later updated_at, kind generic", again, put.CreatedAt)
	}
	full, err = b.API.CredentialGet(ctx, "pg_main", true)
	if err != nil || full.Data["password"] != "pw2" || full.Data["user"] != nil {
		t.Fatalf("after replace: data = %v, %v; want only password pw2", full.Data, err)
	}

	if _, err := b.API.CredentialPut(ctx, api.Credential{Name: "api.token-1", Kind: "http", Data: map[string]any{"token": "t"}}); err != nil {
		t.Fatal(err)
	}
	list, err := b.API.CredentialList(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "api.token-1" || list[1].Name != "pg_main" || list[0].Data != nil || list[1].Data != nil {
		t.Fatalf("list = %+v, %v; want two by name, metadata only", list, err)
	}

	status, body := b.sendJSON("DELETE", "/api/credentials/pg_main", "")
	if status != 200 || body["deleted"] != "pg_main" {
		t.Fatalf("delete = %d %v", status, body)
	}
	for _, req := range [][2]string{{"GET", "/api/credentials/pg_main"}, {"GET", "/api/credentials/pg_main?include_data=true"}, {"DELETE", "/api/credentials/pg_main"}} {
		status, body := b.sendJSON(req[0], req[1], "")
		if status != 404 || errCode(body) != "credential_not_found" || !strings.Contains(errMsg(body), `"pg_main"`) {
			t.Fatalf("%s %s after delete = %d %v; want 404 credential_not_found", req[0], req[1], status, body)
		}
	}
	if err := b.API.CredentialDelete(ctx, "pg_main"); client.StatusOf(err) != 404 {
		t.Fatalf("client delete of a missing credential: %v; want a 404", err)
	}
}

// The password is sealed at rest, and shows up in no response but the
// explicit include_data one, and in no log line, including on error paths.
func TestCredentialSecretNeverLeaks(t *testing.T) {
	t.Parallel()
	b := credSetup(t, nil)
	const pw = "Zebra-Quokka-7731-secret"
	put := `{"name": "leaky", "kind": "postgres", "description": "d", "data": {"user": "app", "password": "` + pw + `"}}`

	responses := map[string][]byte{}
	record := func(label, method, path, body string, wantStatus int) {
		t.Helper()
		status, data := b.send(method, path, body)
		if status != wantStatus {
			t.Fatalf("%s: status %d, want %d: %s", label, status, wantStatus, data)
		}
		responses[label] = data
	}
	record("put", "POST", "/api/credentials", put, 200)
	record("put again", "POST", "/api/credentials", put, 200)
	record("list", "GET", "/api/credentials", "", 200)
	record("get", "GET", "/api/credentials/leaky", "", 200)
	record("get include_data=false", "GET", "/api/credentials/leaky?include_data=false", "", 200)
	record("bad include_data", "GET", "/api/credentials/leaky?include_data="+pw, "", 400)
	record("data is a string", "POST", "/api/credentials", `{"name": "x", "kind": "k", "data": "`+pw+`"}`, 400)
	record("data is an array", "POST", "/api/credentials", `{"name": "x", "kind": "k", "data": ["`+pw+`"]}`, 400)
	record("unknown field", "POST", "/api/credentials", `{"name": "x", "kind": "k", "data": {"p": "`+pw+`"}, "extra": 1}`, 400)
	record("broken json", "POST", "/api/credentials", `{"name": "x", "kind": "k", "data": {"p": "`+pw+`"`, 400)
	record("bad name", "POST", "/api/credentials", `{"name": "a b", "kind": "k", "data": {"p": "`+pw+`"}}`, 400)
	record("executions", "GET", "/api/executions?page_size=10", "", 200)

	for label, data := range responses {
		if strings.Contains(string(data), pw) {
			t.Errorf("%s: the response contains the password: %s", label, data)
		}
	}
	status, data := b.send("GET", "/api/credentials/leaky?include_data=true", "")
	if status != 200 || !strings.Contains(string(data), pw) {
		t.Fatalf("include_data=true = %d %s; want the password", status, data)
	}
	if sealed := b.stored("leaky").Data; len(sealed) == 0 || bytes.Contains(sealed, []byte(pw)) || bytes.Contains(sealed, []byte("app")) {
		t.Fatalf("stored data is not sealed: %q", sealed)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "credential stored") || !strings.Contains(logs, "credential data read") {
		t.Fatalf("the debug log does not show the credential requests; the leak check would prove nothing:\n%s", logs)
	}
	if strings.Contains(logs, pw) {
		t.Fatalf("the server log contains the password:\n%s", logs)
	}
}

func TestCredentialBadInput(t *testing.T) {
	t.Parallel()
	b := credSetup(t, nil)
	long := strings.Repeat("n", 129)
	cases := []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"name with space", "POST", "/api/credentials", `{"name": "a b", "kind": "k", "data": {"x": 1}}`, 400, "bad_request", "1 to 128 letters"},
		{"name too long", "POST", "/api/credentials", `{"name": "` + long + `", "kind": "k", "data": {"x": 1}}`, 400, "bad_request", "credential name"},
		{"name dot dot", "POST", "/api/credentials", `{"name": "..", "kind": "k", "data": {"x": 1}}`, 400, "bad_request", "credential name"},
		{"missing name", "POST", "/api/credentials", `{"kind": "k", "data": {"x": 1}}`, 400, "bad_request", "credential name"},
		{"missing kind", "POST", "/api/credentials", `{"name": "a", "data": {"x": 1}}`, 400, "bad_request", "kind is required"},
		{"bad kind", "POST", "/api/credentials", `{"name": "a", "kind": "no/slash", "data": {"x": 1}}`, 400, "bad_request", "kind"},
		{"long description", "POST", "/api/credentials", `{"name": "a", "kind": "k", "description": "` + strings.Repeat("d", 1025) + `", "data": {"x": 1}}`, 400, "bad_request", "description"},
		{"missing data", "POST", "/api/credentials", `{"name": "a", "kind": "k"}`, 400, "bad_request", "non-empty JSON object"},
		{"empty data", "POST", "/api/credentials", `{"name": "a", "kind": "k", "data": {}}`, 400, "bad_request", "non-empty JSON object"},
		{"null data", "POST", "/api/credentials", `{"name": "a", "kind": "k", "data": null}`, 400, "bad_request", "non-empty JSON object"},
		{"unknown field", "POST", "/api/credentials", `{"name": "a", "kind": "k", "data": {"x": 1}, "secret": 1}`, 400, "bad_json", "secret"},
		{"get bad name", "GET", "/api/credentials/a%20b", ``, 400, "bad_request", "credential name"},
		{"get missing", "GET", "/api/credentials/nope", ``, 404, "credential_not_found", "credential add nope"},
		{"bad include_data", "GET", "/api/credentials/nope?include_data=maybe", ``, 400, "bad_request", "include_data"},
		{"delete bad name", "DELETE", "/api/credentials/a%20b", ``, 400, "bad_request", "credential name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := b.sendJSON(tc.method, tc.path, tc.body)
			if status != tc.status || errCode(body) != tc.code || !strings.Contains(errMsg(body), tc.msg) {
				t.Fatalf("got %d %v, want %d %s containing %q", status, body, tc.status, tc.code, tc.msg)
			}
		})
	}
	t.Run("oversized body", func(t *testing.T) {
		big := `{"name": "a", "kind": "k", "data": {"x": "` + strings.Repeat("x", 100<<10) + `"}}`
		status, body := b.sendJSON("POST", "/api/credentials", big)
		if status != 413 || errCode(body) != "payload_too_large" {
			t.Fatalf("got %d %v, want 413 payload_too_large", status, body)
		}
	})
}

// Without MILLRACE_SECRET_KEY the credential API explains how to set one,
// and the rest of the API works.
func TestCredentialsWithoutSecretKey(t *testing.T) {
	t.Parallel()
	b := credSetup(t, func(c *config.Server) { c.SecretKey = "" })
	for _, req := range [][3]string{
		{"POST", "/api/credentials", `{"name": "a", "kind": "k", "data": {"x": 1}}`},
		{"GET", "/api/credentials", ""},
		{"GET", "/api/credentials/a", ""},
		{"GET", "/api/credentials/a?include_data=true", ""},
		{"DELETE", "/api/credentials/a", ""},
	} {
		status, body := b.sendJSON(req[0], req[1], req[2])
		msg := errMsg(body)
		if status != 503 || errCode(body) != "secret_key_missing" || !strings.Contains(msg, "MILLRACE_SECRET_KEY") || !strings.Contains(msg, "openssl rand -hex 32") {
			t.Fatalf("%s %s = %d %v; want 503 secret_key_missing explaining MILLRACE_SECRET_KEY", req[0], req[1], status, body)
		}
	}
	if _, err := b.API.Register(t.Context(), oneStep); err != nil {
		t.Fatalf("register without a secret key: %v", err)
	}
	if !strings.Contains(b.logs.String(), "MILLRACE_SECRET_KEY is not set") {
		t.Fatalf("no startup warning about the missing key in:\n%s", b.logs.String())
	}
}

func TestMalformedSecretKeyFailsStartup(t *testing.T) {
	t.Parallel()
	var cfg config.Server
	config.ServerSet(&cfg)
	cfg.SecretKey = "not-a-key"
	_, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "MILLRACE_SECRET_KEY is malformed") || !strings.Contains(err.Error(), "openssl rand -hex 32") {
		t.Fatalf("server.New with a malformed key: %v; want an error naming MILLRACE_SECRET_KEY and how to make one", err)
	}
	if strings.Contains(err.Error(), "not-a-key") {
		t.Fatalf("the error echoes the key: %v", err)
	}
}

// A row sealed under another key, or altered, is reported as such.
func TestCredentialUnreadable(t *testing.T) {
	t.Parallel()
	b := credSetup(t, nil)
	ctx := t.Context()
	if _, err := b.API.CredentialPut(ctx, api.Credential{Name: "moved", Kind: "k", Data: map[string]any{"x": "y"}}); err != nil {
		t.Fatal(err)
	}
	other := make([]byte, secret.KeySize)
	_, _ = rand.Read(other)
	otherBox, err := secret.New(hex.EncodeToString(other))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherBox.Seal([]byte(`{"x":"y"}`), []byte("moved"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(b.stored("moved").Data)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		data []byte
		msg  string
	}{
		{foreign, `credential "moved" was sealed with another MILLRACE_SECRET_KEY`},
		{tampered, `credential "moved" cannot be decrypted`},
	} {
		c := b.stored("moved")
		c.Data = tc.data
		if err := b.Srv.Flow().Store().Do(ctx, 1, func(ctx context.Context, tx store.Tx) error { return tx.CredentialPut(ctx, c) }); err != nil {
			t.Fatal(err)
		}
		status, body := b.sendJSON("GET", "/api/credentials/moved?include_data=true", "")
		if status != 409 || errCode(body) != "credential_unreadable" || !strings.Contains(errMsg(body), tc.msg) {
			t.Fatalf("include_data = %d %v; want 409 credential_unreadable %q", status, body, tc.msg)
		}
		// Metadata stays readable, so the credential can be found and replaced.
		if meta, err := b.API.CredentialGet(ctx, "moved", false); err != nil || meta.Kind != "k" {
			t.Fatalf("metadata of an unreadable credential = %+v, %v", meta, err)
		}
	}
	var apiErr *client.Error
	if _, err := b.API.CredentialGet(ctx, "moved", true); !errors.As(err, &apiErr) || apiErr.Code != "credential_unreadable" {
		t.Fatalf("client error = %v; want credential_unreadable", err)
	}
}
