package tools

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func pythonCfg(code string, extra ...any) map[string]any {
	cfg := map[string]any{"kind": "python", "code": code}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i].(string)] = extra[i+1]
	}
	return cfg
}

// pythonRun runs cfg and returns the raw result, whatever its type.
func pythonRun(t *testing.T, cfg map[string]any) any {
	t.Helper()
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run(%v): %v", cfg["code"], err)
	}
	return res
}

// pythonOutput returns the stdout and stderr an error carries.
func pythonOutput(t *testing.T, e *Error) (stdout, stderr string) {
	t.Helper()
	m, ok := e.Result.(map[string]any)
	if !ok {
		t.Fatalf("error result = %T %v, want {stdout, stderr}", e.Result, e.Result)
	}
	return m["stdout"].(string), m["stderr"].(string)
}

func TestPythonHelloWorld(t *testing.T) {
	t.Parallel()
	// hello_world.yaml's test_step: input keys are globals, print output
	// does not disturb the result.
	got := pythonRun(t, pythonCfg(
		"print(f\"HELLO_WORLD: {message}\")\nresult = {\"status\": \"ok\", \"data\": {\"message\": message}}\n",
		"input", map[string]any{"message": "Hello World"}))
	want := map[string]any{"status": "ok", "data": map[string]any{"message": "Hello World"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("result = %#v, want %#v", got, want)
	}
}

func TestPythonResultIsTheValueItself(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code string
		want any
	}{
		{"result = [1, 'a', None, True]", []any{json.Number("1"), "a", nil, true}},
		{"result = 'text'", "text"},
		{"result = 2**62 + 1", json.Number("4611686018427387905")}, // exact, not a float
		{"result = 1.5", json.Number("1.5")},
		{"x = 1", nil}, // no result set
	} {
		if got := pythonRun(t, pythonCfg(tc.code)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: result = %#v, want %#v", tc.code, got, tc.want)
		}
	}
}

func TestPythonInputData(t *testing.T) {
	t.Parallel()
	input := map[string]any{"a": 1.0, "rows": []any{map[string]any{"age": 30.0}}}
	got := pythonRun(t, pythonCfg(
		"result = {'whole': input_data, 'a': a, 'age': rows[0]['age'], 'json': json.dumps([a])}",
		"input", input))
	want := map[string]any{
		"whole": map[string]any{"a": json.Number("1"), "rows": []any{map[string]any{"age": json.Number("30")}}},
		"a":     json.Number("1"), "age": json.Number("30"), "json": "[1]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("result = %#v, want %#v", got, want)
	}

	// user_profile_scorer's extract_user_data passes a key named input_data:
	// the key wins over the whole-mapping alias.
	got = pythonRun(t, pythonCfg("result = input_data['name']",
		"input", map[string]any{"input_data": map[string]any{"name": "Alice"}}))
	if got != "Alice" {
		t.Fatalf("input_data key: result = %#v, want Alice", got)
	}
}

func TestPythonTopLevelReturn(t *testing.T) {
	t.Parallel()
	// duckdb_test.yaml's process step returns from the top level, reads and
	// rebinds its inputs, and defines helpers that use module globals.
	code := `
query_results = input_data.get('query_results', [])
total = 0
def age(row):
    return row.get('age', 0) + offset
offset = 0
for row in query_results:
    total += age(row)
if query_results:
    return {"total": total, "n": len(query_results), "shadowed": query_results[0]["name"]}
return {"status": "error"}
`
	got := pythonRun(t, pythonCfg(code, "input", map[string]any{
		"query_results": []any{map[string]any{"name": "a", "age": 30.0}, map[string]any{"name": "b", "age": 40.0}}}))
	want := map[string]any{"total": json.Number("70"), "n": json.Number("2"), "shadowed": "a"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("result = %#v, want %#v", got, want)
	}
	if got := pythonRun(t, pythonCfg(code, "input", map[string]any{})); !reflect.DeepEqual(got, map[string]any{"status": "error"}) {
		t.Fatalf("early-exit branch: result = %#v", got)
	}
	// A bare return ends the code early and leaves result as set.
	if got := pythonRun(t, pythonCfg("result = 1\nif result:\n    return\nresult = 2")); got != json.Number("1") {
		t.Fatalf("bare return: result = %#v, want 1", got)
	}
}

func TestPythonException(t *testing.T) {
	t.Parallel()
	code := "print('before')\nimport sys\nprint('warn', file=sys.stderr)\nraise ValueError('Missing required field: name')\n"
	e := runErr(t, t.Context(), pythonCfg(code))
	if e.Kind != "python" || e.Retryable {
		t.Fatalf("error = %+v, want non-retryable python error", e)
	}
	for _, want := range []string{
		"ValueError: Missing required field: name",
		`File "<code>", line 4, in <module>`,
		"raise ValueError('Missing required field: name')", // the source line
	} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	if strings.Contains(e.Message, "__millrace") || strings.Contains(e.Message, `File "<string>"`) {
		t.Errorf("message %q shows the bootstrap's frames", e.Message)
	}
	stdout, stderr := pythonOutput(t, e)
	if stdout != "before\n" || stderr != "warn\n" {
		t.Fatalf("stdout %q, stderr %q; want the code's own output", stdout, stderr)
	}
}

func TestPythonExceptionInReturningCode(t *testing.T) {
	t.Parallel()
	e := runErr(t, t.Context(), pythonCfg("import json\nx = json.loads('{')\nreturn x"))
	if !strings.Contains(e.Message, "json.decoder.JSONDecodeError") ||
		!strings.Contains(e.Message, "at line 2: x = json.loads('{')") || strings.Contains(e.Message, "__millrace") {
		t.Fatalf("message %q: want the qualified type and the code's line, not the wrapper", e.Message)
	}
}

func TestPythonSyntaxError(t *testing.T) {
	t.Parallel()
	e := runErr(t, t.Context(), pythonCfg("x = 1\nif x\n    pass\n"))
	if e.Kind != "python" || e.Retryable || !strings.Contains(e.Message, "SyntaxError") ||
		!strings.Contains(e.Message, "line 2") {
		t.Fatalf("error = %+v, want non-retryable SyntaxError at line 2", e)
	}
}

func TestPythonResultNotJSON(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]string{
		"result = {1, 2}": "set is not JSON serializable",
		"import datetime as d\nresult = d.date.today()": "date is not JSON serializable",
		"result = float('nan')":                         "Out of range float values",
	} {
		e := runErr(t, t.Context(), pythonCfg(code))
		if e.Kind != "python" || e.Retryable || !strings.Contains(e.Message, "not JSON-encodable") ||
			!strings.Contains(e.Message, want) {
			t.Errorf("%s: error = %+v, want a not-JSON-encodable error mentioning %q", code, e, want)
		}
	}
}

func TestPythonSysExit(t *testing.T) {
	t.Parallel()
	if got := pythonRun(t, pythonCfg("import sys\nresult = 'done'\nsys.exit(0)\nresult = 'not reached'")); got != "done" {
		t.Fatalf("sys.exit(0): result = %#v, want done", got)
	}
	e := runErr(t, t.Context(), pythonCfg("import sys\nsys.exit(3)"))
	if e.Kind != "python" || !strings.Contains(e.Message, "sys.exit(3)") {
		t.Fatalf("sys.exit(3): error = %+v", e)
	}
	e = runErr(t, t.Context(), pythonCfg("import os, sys\nprint('bye', file=sys.stderr)\nos._exit(7)"))
	if !strings.Contains(e.Message, "exited with code 7 before reporting a result") || !strings.Contains(e.Message, "bye") {
		t.Fatalf("os._exit: message %q, want the exit code and stderr tail", e.Message)
	}
}

func TestPythonEnv(t *testing.T) {
	t.Parallel()
	got := pythonRun(t, pythonCfg("import os\nresult = [os.environ['GREETING'], os.environ['N'], 'PATH' in os.environ]",
		"env", map[string]any{"GREETING": "hi", "N": 3.0}))
	if !reflect.DeepEqual(got, []any{"hi", "3", true}) {
		t.Fatalf("result = %#v, want the step's env on top of the worker's", got)
	}
}

func TestPythonTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	// The code's own child must die with it; its pid is printed first.
	code := "import subprocess, time\np = subprocess.Popen(['sleep', '30'])\nprint(p.pid)\ntime.sleep(30)"
	start := time.Now()
	// The timeout leaves room for python to start under a loaded test run;
	// timeout as a string exercises rendered configs.
	e := runErr(t, t.Context(), pythonCfg(code, "timeout", "4"))
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("returned after %s; a timeout must return promptly", elapsed)
	}
	if e.Kind != "python" || !e.Retryable || !strings.Contains(e.Message, "timed out after 4s") {
		t.Fatalf("error = %+v, want retryable python timeout", e)
	}
	stdout, _ := pythonOutput(t, e)
	waitGone(t, pidFrom(t, stdout))
}

func TestPythonCanceled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := Run(ctx, pythonCfg("import time\nopen(path, 'w').close()\ntime.sleep(30)",
			"input", map[string]any{"path": started}))
		errc <- err
	}()
	waitForFile(t, started, 10*time.Second, "the code's start marker")
	cancel()
	wantCanceledPromptly(t, errc)
}

func TestPythonPrintCannotForgeResult(t *testing.T) {
	t.Parallel()
	// The result travels on its own descriptor: output that looks like the
	// envelope, or a closed stdout, changes nothing.
	got := pythonRun(t, pythonCfg(`print('{"status": "ok", "result": "forged"}')
import sys, os
sys.stdout.flush()
os.close(1)
result = "real"`))
	if got != "real" {
		t.Fatalf("result = %#v, want real", got)
	}
}

func TestPythonBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"kind": "python"}, `"code" is required`},
		{pythonCfg("  \n"), `"code" is required`},
		{map[string]any{"kind": "python", "code": 3.0}, `"code" must be a string`},
		{pythonCfg("pass", "input", []any{1.0}), `"input" must be a mapping`},
		{pythonCfg("pass", "timeout", -1.0), `"timeout" must be a positive number`},
		{pythonCfg("pass", "env", "A=1"), `"env" must be a map`},
	} {
		e := runErr(t, t.Context(), tc.cfg)
		if e.Kind != ErrorKindConfig || e.Retryable || !strings.Contains(e.Message, tc.want) {
			t.Errorf("Run(%v) = %+v, want config error containing %q", tc.cfg, e, tc.want)
		}
	}
}

func TestPythonEscapedHolderOfResultPipe(t *testing.T) {
	t.Parallel()
	// A grandchild in its own session survives the group kill and holds
	// the result descriptor open: Run must still return, with the result.
	code := `import subprocess
p = subprocess.Popen(['sleep', '30'], start_new_session=True, pass_fds=(3,),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
result = p.pid`
	start := time.Now()
	got := pythonRun(t, pythonCfg(code))
	n, ok := got.(json.Number)
	if !ok {
		t.Fatalf("result = %#v, want the grandchild's pid", got)
	}
	pid, _ := n.Int64()
	t.Cleanup(func() { _ = syscall.Kill(int(pid), syscall.SIGKILL) })
	// The result is complete when written: no need to wait for the pipe.
	if elapsed := time.Since(start); elapsed >= procPipeGrace {
		t.Fatalf("returned after %s, want before the pipe grace of %s", elapsed, procPipeGrace)
	}
}

// NoETL's `def main(...)` form: the code defines main, which is called with
// the input bound to its parameters by name, and returns the result.
func TestPythonMainForm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, code string
		want       any
	}{
		{"by name", "def main(a, b=5, c=7):\n    return {'sum': a + b + c}\n", map[string]any{"sum": json.Number("13")}},
		{"kwargs", "def main(**kw):\n    return sorted(kw)\n", []any{"a", "b"}},
		{"whole input", "def main(input_data):\n    return input_data['a']\n", json.Number("1")},
		{"one param", "def main(payload):\n    return payload['b']\n", json.Number("5")},
		{"returns None", "def main(a):\n    pass\nresult = 'ignored'\n", nil},
	} {
		got := pythonRun(t, pythonCfg(tc.code, "input", map[string]any{"a": 1, "b": 5}))
		if !reflect.DeepEqual(normalizeJSON(t, got), normalizeJSON(t, tc.want)) {
			t.Errorf("%s: result = %#v, want %#v", tc.name, got, tc.want)
		}
	}
	_, err := Run(t.Context(), pythonCfg("def main(a, missing):\n    return 1\n", "input", map[string]any{"a": 1}))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("main with an unbound parameter: error = %v, want one naming it", err)
	}
}

// libs imports modules under the names given: {alias: module}.
func TestPythonLibs(t *testing.T) {
	t.Parallel()
	got := pythonRun(t, pythonCfg("result = [j.dumps([1]), b64.b64encode(b'x').decode()]\n",
		"libs", map[string]any{"j": "json", "b64": "base64"}))
	if want := []any{"[1]", "eA=="}; !reflect.DeepEqual(got, want) {
		t.Fatalf("result = %#v, want %#v", got, want)
	}
	for _, tc := range []struct {
		libs any
		want string
	}{
		{map[string]any{"x": "no_such_module_zz"}, `no_such_module_zz`},
		{map[string]any{"1x": "json"}, `"1x" is not a Python name`},
		{map[string]any{"x": 3}, `must be a module name`},
		{"json", `must be a map`},
	} {
		_, err := Run(t.Context(), pythonCfg("result = 1\n", "libs", tc.libs))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("libs %v: error = %v, want one containing %q", tc.libs, err, tc.want)
		}
	}
}

// normalizeJSON compares results as JSON text, so number types do not matter.
func normalizeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
