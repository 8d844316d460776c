package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/server/servertest"
)

type credBundle struct {
	t *testing.T
	h *servertest.Harness
}

func credSetup(t *testing.T) *credBundle {
	t.Helper()
	return &credBundle{t: t, h: servertest.Start(t, nil)}
}

// run executes the CLI against the test server with stdin as input.
func (b *credBundle) run(stdin string, args ...string) (string, error) {
	b.t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(args, "--server", b.h.Srv.URL()))
	err := root.ExecuteContext(b.t.Context())
	return out.String() + errOut.String(), err
}

func (b *credBundle) data(name string) map[string]any {
	b.t.Helper()
	c, err := b.h.API.CredentialGet(b.t.Context(), name, true)
	if err != nil {
		b.t.Fatal(err)
	}
	return c.Data
}

func TestCredentialCommands(t *testing.T) {
	t.Parallel()
	b := credSetup(t)
	const pw = "Walrus-5519-hidden"

	out, err := b.run("", "credential", "add", "pg", "--kind", "postgres", "--description", "main db",
		"--set", "user=app", "--set", "password="+pw, "--set", "port=5432")
	if err != nil || !strings.Contains(out, "stored credential pg (kind postgres)") {
		t.Fatalf("add --set: %q, %v", out, err)
	}
	if d := b.data("pg"); d["user"] != "app" || d["password"] != pw || d["port"] != "5432" {
		t.Fatalf("pg data = %v; want --set values kept as strings", d)
	}

	// YAML on standard input, with --json output: metadata only.
	out, err = b.run("token: "+pw+"\nheaders:\n  X-Team: data\n", "credential", "add", "api", "--kind", "http", "--from-file", "-", "--json")
	if err != nil {
		t.Fatalf("add --from-file -: %q, %v", out, err)
	}
	var meta map[string]any
	if err := json.Unmarshal([]byte(out), &meta); err != nil || meta["name"] != "api" || meta["kind"] != "http" || meta["data"] != nil {
		t.Fatalf("add --json = %q; want metadata without data", out)
	}
	if d := b.data("api"); d["token"] != pw || d["headers"].(map[string]any)["X-Team"] != "data" {
		t.Fatalf("api data = %v", d)
	}

	// A JSON file, with one field overridden by --set.
	file := filepath.Join(t.TempDir(), "cred.json")
	if err := os.WriteFile(file, []byte(`{"user": "u", "password": "old", "port": 5432}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := b.run("", "credential", "add", "filed", "--kind", "postgres", "--from-file", file, "--set", "password=new"); err != nil {
		t.Fatalf("add --from-file FILE: %q, %v", out, err)
	}
	if d := b.data("filed"); d["user"] != "u" || d["password"] != "new" || fmt.Sprint(d["port"]) != "5432" {
		t.Fatalf("filed data = %v", d)
	}
	if out, err := b.run("", "credential", "add", "inline", "--kind", "generic", "--data", `{"k": "v"}`); err != nil {
		t.Fatalf("add --data: %q, %v", out, err)
	}

	out, err = b.run("", "credential", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NAME", "api", "filed", "inline", "pg", "postgres", "main db"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, pw) {
		t.Fatalf("list shows a secret:\n%s", out)
	}
	out, err = b.run("", "credential", "list", "--json")
	var list []api.Credential
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 4 || strings.Contains(out, pw) {
		t.Fatalf("list --json = %q, %v; want 4 credentials without data", out, err)
	}

	if out, err := b.run("", "credential", "delete", "pg"); err != nil || !strings.Contains(out, "deleted credential pg") {
		t.Fatalf("delete: %q, %v", out, err)
	}
	if _, err := b.run("", "credential", "delete", "pg"); err == nil || !strings.Contains(err.Error(), "credential_not_found") {
		t.Fatalf("delete twice: %v; want credential_not_found", err)
	}
	out, err = b.run("", "credential", "delete", "api", "--json")
	if err != nil || !strings.Contains(out, `"deleted": "api"`) {
		t.Fatalf("delete --json: %q, %v", out, err)
	}
}

func TestCredentialAddBadInput(t *testing.T) {
	t.Parallel()
	b := credSetup(t)
	const pw = "Narwhal-0042-hidden"
	file := filepath.Join(t.TempDir(), "list.yaml")
	if err := os.WriteFile(file, []byte("- "+pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no kind", []string{"x", "--set", "a=b"}, `required flag(s) "kind" not set`},
		{"no fields", []string{"x", "--kind", "k"}, "at least one field"},
		{"data and file", []string{"x", "--kind", "k", "--data", `{"a": 1}`, "--from-file", file}, "none of the others can be"},
		{"data not an object", []string{"x", "--kind", "k", "--data", `["` + pw + `"]`}, "--data must be a JSON object"},
		{"set without =", []string{"x", "--kind", "k", "--set", pw}, "--set number 1 is not key=value"},
		{"file not a mapping", []string{"x", "--kind", "k", "--from-file", file}, "object (mapping) of fields"},
		{"missing file", []string{"x", "--kind", "k", "--from-file", file + ".nope"}, "no such file"},
		{"bad name", []string{"a/b", "--kind", "k", "--set", "a=b"}, "credential name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := b.run("", append([]string{"credential", "add"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (output %q); want %q", err, out, tc.want)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(out, pw) {
				t.Fatalf("the error quotes the secret: %v", err)
			}
		})
	}
}
