package tools

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// runErr runs cfg, requires an *Error, and returns it.
func runErr(t *testing.T, ctx context.Context, cfg map[string]any) *Error {
	t.Helper()
	res, err := Run(ctx, cfg)
	if err == nil {
		t.Fatalf("Run(%v) = %v, want an error", cfg, res)
	}
	var te *Error
	if !errors.As(err, &te) {
		t.Fatalf("Run(%v) error %T %v, want *Error", cfg, err, err)
	}
	if res != nil {
		t.Errorf("Run(%v) returned result %v alongside the error; want it only in Error.Result", cfg, res)
	}
	return te
}

// runOK runs cfg and requires a map result.
func runOK(t *testing.T, ctx context.Context, cfg map[string]any) map[string]any {
	t.Helper()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run(%v): %v", cfg, err)
	}
	m, ok := res.(map[string]any)
	if !ok {
		t.Fatalf("Run(%v) = %T %v, want map[string]any", cfg, res, res)
	}
	return m
}

func TestKinds(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"noop":     {"result"},
		"shell":    {"cmds", "cwd", "env", "timeout_seconds"},
		"http":     {"auth", "body", "data", "endpoint", "follow_redirects", "headers", "json", "method", "params", "payload", "timeout", "url", "verify_ssl"},
		"postgres": {"auth", "command", "connection", "params", "timeout"},
		"duckdb":   {"attach", "auth", "command", "database", "gcs_credential", "query", "timeout"},
		"python":   {"auth", "code", "env", "input", "libs", "timeout"},
		"nats":     {"auth", "bucket", "create_bucket", "data", "key", "operation", "subject", "url", "value"},
		"playbook": {"input", "name", "path", "payload", "return_step", "task", "timeout", "version"},
	}
	got := Kinds()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Kinds() = %v, want %v", got, want)
	}
	// The result is a copy: callers may not corrupt the registry.
	got["shell"][0] = "changed"
	delete(got, "http")
	if again := Kinds(); !reflect.DeepEqual(again, want) {
		t.Fatalf("Kinds() after caller mutation = %v, want %v", again, want)
	}
}

func TestUnknownKind(t *testing.T) {
	t.Parallel()
	for _, cfg := range []map[string]any{
		{"kind": "postgres-v9"},
		{},
		{"kind": 3.0},
	} {
		e := runErr(t, t.Context(), cfg)
		if e.Kind != ErrorKindUnknown || e.Retryable {
			t.Errorf("Run(%v) = %+v, want non-retryable %q", cfg, e, ErrorKindUnknown)
		}
		for kind := range Kinds() {
			if !strings.Contains(e.Message, kind) {
				t.Errorf("message %q should list the supported kind %s", e.Message, kind)
			}
		}
	}
}

func TestNoop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if got := runOK(t, ctx, map[string]any{"kind": "noop"}); len(got) != 0 {
		t.Fatalf("noop = %v, want {}", got)
	}
	want := map[string]any{"rows": []any{1.0, 2.0}}
	if got := runOK(t, ctx, map[string]any{"kind": "noop", "result": want}); !reflect.DeepEqual(got, want) {
		t.Fatalf("noop with result = %v, want %v", got, want)
	}
}

func TestErrorJSON(t *testing.T) {
	t.Parallel()
	e := &Error{Kind: "http", Message: "GET x returned 503", Retryable: true}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"kind":"http","message":"GET x returned 503","retryable":true}` {
		t.Fatalf("json = %s", b)
	}
	if !strings.Contains(e.Error(), "503") || !strings.Contains(e.Error(), "retryable") {
		t.Fatalf("Error() = %q", e.Error())
	}
}
