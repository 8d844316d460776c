package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/wait"
)

func shellCfg(cmds any, extra ...any) map[string]any {
	cfg := map[string]any{"kind": "shell", "cmds": cmds}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i].(string)] = extra[i+1]
	}
	return cfg
}

// processGone reports whether pid has exited. A zombie counts as gone: it
// holds no resources and waits only for its (possibly non-reaping) parent.
func processGone(t *testing.T, pid int) bool {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		t.Fatalf("read /proc/%d/stat: %v", pid, err)
	}
	// Format: "pid (comm) S ..."; comm may contain spaces, so split at ')'.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	return strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// waitGone polls until pid has exited or the deadline passes.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	wait.Until(t, 5*time.Second, fmt.Sprintf("process %d to exit with its killed process group", pid), func() bool { return processGone(t, pid) })
}

func pidFrom(t *testing.T, stdout any) int {
	t.Helper()
	s, _ := stdout.(string)
	pid, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || pid <= 0 {
		t.Fatalf("stdout %q: want a pid", s)
	}
	return pid
}

func TestShellSingleCommand(t *testing.T) {
	t.Parallel()
	got := runOK(t, t.Context(), shellCfg("echo hello; echo oops >&2"))
	if got["stdout"] != "hello\n" || got["stderr"] != "oops\n" || got["exit_code"] != 0 {
		t.Fatalf("result = %#v", got)
	}
}

func TestShellMultipleCommandsConcatenate(t *testing.T) {
	t.Parallel()
	got := runOK(t, t.Context(), shellCfg([]any{"echo one", "echo two", "x=3; echo $x"}))
	if got["stdout"] != "one\ntwo\n3\n" {
		t.Fatalf("stdout = %q", got["stdout"])
	}
}

func TestShellStopsAtFirstFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	e := runErr(t, t.Context(), shellCfg(
		[]string{"echo one", "echo broken >&2; exit 3", "touch " + marker},
		"cwd", dir))
	if e.Kind != "shell" || e.Retryable {
		t.Fatalf("error = %+v, want non-retryable shell", e)
	}
	for _, want := range []string{"2 of 3", "code 3", "broken"} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	res, ok := e.Result.(map[string]any)
	if !ok || res["stdout"] != "one\n" || res["stderr"] != "broken\n" || res["exit_code"] != 3 {
		t.Fatalf("Result = %#v", e.Result)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("third command ran after the second failed (stat err %v)", err)
	}
}

func TestShellEnvAddsToWorkerEnvironment(t *testing.T) {
	t.Parallel()
	got := runOK(t, t.Context(), shellCfg(
		`echo "$MR_GREETING $MR_COUNT $MR_FLAG"; test -n "$PATH" && echo has-path`,
		"env", map[string]any{"MR_GREETING": "hi there", "MR_COUNT": 5.0, "MR_FLAG": true}))
	if got["stdout"] != "hi there 5 true\nhas-path\n" {
		t.Fatalf("stdout = %q", got["stdout"])
	}
}

func TestShellCwd(t *testing.T) {
	t.Parallel()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := runOK(t, t.Context(), shellCfg("pwd", "cwd", dir))
	if got["stdout"] != dir+"\n" {
		t.Fatalf("pwd = %q, want %q", got["stdout"], dir)
	}

	e := runErr(t, t.Context(), shellCfg("pwd", "cwd", filepath.Join(dir, "missing")))
	if e.Kind != "shell" || e.Retryable || !strings.Contains(e.Message, "cannot start") {
		t.Fatalf("missing cwd error = %+v", e)
	}
}

func TestShellExitBySignal(t *testing.T) {
	t.Parallel()
	e := runErr(t, t.Context(), shellCfg("kill -9 $$"))
	if res := e.Result.(map[string]any); res["exit_code"] != 137 {
		t.Fatalf("exit_code = %v, want 137 (128+SIGKILL)", res["exit_code"])
	}
}

func TestShellStderrTailInMessage(t *testing.T) {
	t.Parallel()
	e := runErr(t, t.Context(), shellCfg(
		`i=0; while [ $i -lt 300 ]; do printf 'noise-line-%03d\n' $i >&2; i=$((i+1)); done; echo LAST >&2; exit 1`))
	if !strings.Contains(e.Message, "LAST") || strings.Contains(e.Message, "noise-line-000") {
		t.Fatalf("message should quote only the stderr tail: %q", e.Message)
	}
	if len(e.Message) > procStderrTail+200 {
		t.Fatalf("message is %d bytes; the stderr quote should be capped", len(e.Message))
	}
}

func TestShellOutputCapped(t *testing.T) {
	t.Parallel()
	const n = 2_000_000
	got := runOK(t, t.Context(), shellCfg("head -c "+strconv.Itoa(n)+" /dev/zero"))
	out := got["stdout"].(string)
	wantMarker := "[truncated: " + strconv.Itoa(n-procOutputCap) + " more bytes]"
	if !strings.HasSuffix(out, wantMarker) || len(out) > procOutputCap+len(wantMarker)+1 {
		t.Fatalf("stdout len %d, suffix %q; want %d bytes then %q", len(out), out[max(0, len(out)-50):], procOutputCap, wantMarker)
	}
}

func TestShellTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	start := time.Now()
	// The backgrounded sleep is a grandchild: killing only the shell would
	// orphan it. timeout_seconds as a string exercises rendered configs.
	e := runErr(t, t.Context(), shellCfg("sleep 30 & echo $!; wait", "timeout_seconds", "1"))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("returned after %s; a timeout must return promptly", elapsed)
	}
	if e.Kind != "shell" || !e.Retryable || !strings.Contains(e.Message, "timed out after 1s") {
		t.Fatalf("error = %+v, want retryable shell timeout", e)
	}
	waitGone(t, pidFrom(t, e.Result.(map[string]any)["stdout"]))
}

func TestShellTimeoutForegroundSleep(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := runErr(t, t.Context(), shellCfg([]any{"sleep 30"}, "timeout_seconds", json.Number("0.5")))
	if elapsed := time.Since(start); elapsed > 5*time.Second || !e.Retryable {
		t.Fatalf("after %s: %+v, want prompt retryable timeout", elapsed, e)
	}
}

func TestShellCancelKillsProcessGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := Run(ctx, shellCfg(`sleep 30 & echo $! > pid.tmp && mv pid.tmp pid; wait`, "cwd", dir))
		errc <- err
	}()

	raw := waitForFile(t, pidFile, 5*time.Second, "the command's pid")
	cancel()
	wantCanceledPromptly(t, errc)
	waitGone(t, pidFrom(t, string(raw)))
}

func TestShellKillsLeftoverBackgroundProcesses(t *testing.T) {
	t.Parallel()
	got := runOK(t, t.Context(), shellCfg("sleep 30 >/dev/null 2>&1 & echo $!"))
	waitGone(t, pidFrom(t, got["stdout"]))
}

func TestShellBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   map[string]any
		field string
	}{
		{map[string]any{"kind": "shell"}, `"cmds"`},
		{shellCfg(5.0), `"cmds"`},
		{shellCfg([]any{}), `"cmds"`},
		{shellCfg([]any{"echo", 1.0}), `"cmds"`},
		{shellCfg("true", "env", "A=1"), `"env"`},
		{shellCfg("true", "env", map[string]any{"A": map[string]any{}}), `"env"`},
		{shellCfg("true", "env", map[string]any{"A=B": "x"}), `"env"`},
		{shellCfg("true", "cwd", 1.0), `"cwd"`},
		{shellCfg("true", "timeout_seconds", "soon"), `"timeout_seconds"`},
		{shellCfg("true", "timeout_seconds", -1.0), `"timeout_seconds"`},
	} {
		e := runErr(t, t.Context(), tc.cfg)
		if e.Kind != ErrorKindConfig || e.Retryable || !strings.Contains(e.Message, tc.field) {
			t.Errorf("Run(%v) = %+v, want non-retryable config error naming %s", tc.cfg, e, tc.field)
		}
	}
}

// waitForFile polls until path exists and returns its contents.
func waitForFile(t *testing.T, path string, d time.Duration, what string) []byte {
	t.Helper()
	var raw []byte
	if err := wait.Poll(d, func() (err error) {
		raw, err = os.ReadFile(path)
		return err
	}); err != nil {
		t.Fatalf("%s never appeared at %s: %v", what, path, err)
	}
	return raw
}

// wantCanceledPromptly asserts the tool returned a retryable canceled
// error within 5 s of its context being cancelled.
func wantCanceledPromptly(t *testing.T, errc <-chan error) {
	t.Helper()
	select {
	case err := <-errc:
		var e *Error
		if !errors.As(err, &e) || e.Kind != ErrorKindCanceled || !e.Retryable {
			t.Fatalf("error = %v, want retryable %q", err, ErrorKindCanceled)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return promptly after cancel")
	}
}
