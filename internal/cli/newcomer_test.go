package cli

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// An unknown subcommand under a group is an error naming it, not the
// group's help with exit 0.
func TestUnknownSubcommandFails(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"nats", "stream", "ls"},
		{"executions", "foo"},
		{"nats", "bogus"},
		{"catalog", "lsit"},
		{"nosuch"},
	} {
		code, _, stderr := runCLI(t, args...)
		name := args[len(args)-1]
		if code == 0 || !strings.Contains(stderr, `unknown command "`+name+`"`) {
			t.Errorf("millrace %s: exit %d, stderr %q; want non-zero and the unknown command named", strings.Join(args, " "), code, stderr)
		}
	}
	if _, _, stderr := runCLI(t, "catalog", "lsit"); !strings.Contains(stderr, "did you mean list") {
		t.Errorf("catalog lsit: stderr %q, want a suggestion", stderr)
	}
	// A bare group still shows its help.
	if code, stdout, _ := runCLI(t, "nats", "stream"); code != 0 || !strings.Contains(stdout, "info") {
		t.Errorf("nats stream: exit %d, stdout %q; want its help", code, stdout)
	}
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "millrace ") || len(strings.TrimSpace(stdout)) <= len("millrace") {
		t.Fatalf("--version: exit %d, stdout %q", code, stdout)
	}
	// catalog get keeps its own --version (a playbook version).
	if code, _, stderr := runCLI(t, "catalog", "get", "--help"); code != 0 || stderr != "" {
		t.Fatalf("catalog get --help: exit %d, %s", code, stderr)
	}
}

// validate --json names fields in snake case, like the rest of the API.
func TestValidateJSONFieldNames(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: x, path: x}\nworkflow:\n  - step: start\n    tool: {kind: nosuch}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := runCLI(t, "validate", "--json", bad)
	if code == 0 {
		t.Fatal("validate of a bad playbook exited 0")
	}
	var report map[string][]map[string]any
	if err := json.Unmarshal([]byte(stdout), &report); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
	ps := report[bad]
	if len(ps) == 0 {
		t.Fatalf("no problems reported: %s", stdout)
	}
	for _, k := range []string{"file", "line", "col", "message"} {
		if _, ok := ps[0][k]; !ok {
			t.Errorf("problem %v has no %q", ps[0], k)
		}
	}
}

// With --json, a failure is the API's error envelope on stdout.
func TestJSONErrors(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"error":{"code":"invalid_playbook","message":"x.yaml:1:1: bad"}}`))
	}))
	t.Cleanup(api.Close)
	pb := filepath.Join(t.TempDir(), "x.yaml")
	if err := os.WriteFile(pb, []byte("kind: Playbook\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(stdout, wantCode string) {
		t.Helper()
		var env struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(stdout), &env); err != nil || env.Error.Code != wantCode || env.Error.Message == "" {
			t.Errorf("stdout %q (%v): want an error envelope with code %s", stdout, err, wantCode)
		}
	}
	code, stdout, _ := runCLI(t, "register", pb, "--server", api.URL, "--json")
	if code == 0 {
		t.Fatal("register of a refused playbook exited 0")
	}
	check(stdout, "invalid_playbook")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	_, stdout, _ = runCLI(t, "executions", "list", "--server", dead, "--json")
	check(stdout, "server_unreachable")

	_, stdout, _ = runCLI(t, "status", "nope", "--server", dead, "--json")
	check(stdout, "cli_error")
}

// Client commands find a running `millrace dev` through DATA_DIR/dev.json.
func TestClientsFindDev(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"executions":[],"page":1,"total":0}`))
	}))
	t.Cleanup(api.Close)
	dir := t.TempDir()
	t.Setenv("MILLRACE_DATA_DIR", dir)
	t.Setenv("SERVER_API_URL", "")
	remove := announceDev(newTestLogger(t), dir, api.URL, "nats://127.0.0.1:1", "")
	d, ok := findDev()
	if !ok || d.APIURL != api.URL || d.PID != os.Getpid() {
		t.Fatalf("findDev = %+v, %v", d, ok)
	}
	if code, stdout, stderr := runCLI(t, "executions", "list"); code != 0 || !strings.Contains(stdout, "page 1 of 0") {
		t.Fatalf("executions list against dev: exit %d\n%s%s", code, stdout, stderr)
	}
	// The NATS commands follow it too, and say where the URL came from.
	if _, _, stderr := runCLI(t, "nats", "stream", "info"); !strings.Contains(stderr, "nats://127.0.0.1:1") || !strings.Contains(stderr, "dev.json") {
		t.Fatalf("nats stream info: stderr %q, want the dev URL and where it came from", stderr)
	}
	remove()
	if _, ok := findDev(); ok {
		t.Fatal("dev.json still found after remove")
	}
	// A file left by a process that is gone is ignored.
	b, _ := json.Marshal(devInstance{APIURL: api.URL, PID: 1 << 30})
	if err := os.WriteFile(filepath.Join(dir, devFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if d, ok := findDev(); ok {
		t.Fatalf("findDev followed a dead process: %+v", d)
	}
}

func newTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// execute --watch prints the execution id before anything else, and
// query --wait reports each status on stderr.
func TestWatchAndWaitReport(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	mux := http.NewServeMux()
	reply := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		}
	}
	mux.HandleFunc("POST /api/execute", reply(`{"execution_id": 42, "status": "running"}`))
	mux.HandleFunc("GET /api/executions/42/events", reply(`{"events": []}`))
	mux.HandleFunc("GET /api/executions/42", reply(`{"execution_id": 42, "path": "p", "version": 1, "status": "completed", "result": {"n": 1}}`))
	mux.HandleFunc("POST /api/v2/projects/a/query/sql", reply(`{"queryUuid": "q1", "cacheMetadata": {"cacheHit": false}}`))
	mux.HandleFunc("GET /api/v2/projects/a/query/q1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch n := polls.Add(1); {
		case n == 1:
			_, _ = w.Write([]byte(`{"queryUuid": "q1", "status": "queued"}`))
		case n == 2:
			_, _ = w.Write([]byte(`{"queryUuid": "q1", "status": "executing"}`))
		default:
			_, _ = w.Write([]byte(`{"queryUuid": "q1", "status": "ready", "rows": [{"one": 1}], "columns": [{"name": "one", "type": "int4"}]}`))
		}
	})
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)

	code, stdout, stderr := runCLI(t, "execute", "p", "--watch", "--server", api.URL)
	if code != 0 || !strings.HasPrefix(stdout, "execution 42 started") || !strings.Contains(stdout, `result: {"n": 1}`) {
		t.Fatalf("execute --watch: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, "execute", "p", "--watch", "--json", "--server", api.URL)
	var ex map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &ex) != nil || !strings.HasPrefix(stderr, "execution 42 started") {
		t.Fatalf("execute --watch --json: exit %d\nstdout %q (want only the JSON record)\nstderr %q (want the id)", code, stdout, stderr)
	}

	code, stdout, stderr = runCLI(t, "query", "select 1 as one", "--project", "a", "--wait", "--server", api.URL)
	if code != 0 || !strings.Contains(stdout, "(1 rows)") {
		t.Fatalf("query --wait: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	for _, want := range []string{"q1 submitted", "q1 queued after", "q1 executing after", "q1 ready after"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("query --wait progress lacks %q:\n%s", want, stderr)
		}
	}
}
