package tools

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// NoETL's tool-level auth shapes, read one way for duckdb and python.
func TestParseAuth(t *testing.T) {
	t.Parallel()
	got, err := parseAuth("python", map[string]any{
		"b": "cred_b",
		"a": map[string]any{"source": "credential", "tool": "hmac", "service": "gcs", "key": "cred_a", "scope": "gs://x"},
	})
	want := []authEntry{{name: "a", tool: "hmac", cred: "cred_a", scope: "gs://x"}, {name: "b", cred: "cred_b"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseAuth = %+v, %v; want %+v", got, err, want)
	}
	if got, err := parseAuth("duckdb", "pg"); err != nil || !reflect.DeepEqual(got, []authEntry{{name: "pg", cred: "pg"}}) {
		t.Fatalf("parseAuth(string) = %+v, %v", got, err)
	}
	if got, err := parseAuth("duckdb", nil); err != nil || got != nil {
		t.Fatalf("parseAuth(nil) = %+v, %v", got, err)
	}
	for _, c := range []struct {
		name string
		auth any
		want string
	}{
		{"unknown key", map[string]any{"a": map[string]any{"key": "c", "region": "eu"}}, `unknown key "region"`},
		{"other source", map[string]any{"a": map[string]any{"key": "c", "source": "env"}}, `source "env" is not supported`},
		{"no credential", map[string]any{"a": map[string]any{"tool": "hmac"}}, "names no credential"},
		{"entry not a mapping", map[string]any{"a": 3}, "must be a credential name"},
		{"not a name or mapping", []any{"x"}, "must be a credential name or a mapping"},
	} {
		_, err := parseAuth("python", c.auth)
		var te *Error
		if !errors.As(err, &te) || te.Kind != ErrorKindConfig || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: parseAuth = %v; want a config error with %q", c.name, err, c.want)
		}
	}
}
