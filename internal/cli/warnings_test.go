package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unreachablePlaybook has a step no arc leads to: NoETL runs it (the step
// never runs), so validate and run accept it and say so as a warning.
const unreachablePlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: w, path: tests/warn}
workflow:
  - step: start
    tool: {kind: noop, result: {ok: true}}
  - step: orphan
    tool: {kind: noop}
`

func TestUnreachableStepWarnsInValidateAndRun(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "warn.yaml")
	if err := os.WriteFile(f, []byte(unreachablePlaybook), 0o644); err != nil {
		t.Fatal(err)
	}
	want := f + `:7:5: warning: step "orphan" is unreachable from start step "start" and never runs`
	code, stdout, stderr := runCLI(t, "validate", f)
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, f+": ok") {
		t.Fatalf("validate: exit %d\nstdout %s\nstderr %s\nwant exit 0 with %q", code, stdout, stderr, want)
	}
	code, stdout, _ = runCLI(t, "validate", "--json", f)
	if code != 0 || !strings.Contains(stdout, `"warning": true`) {
		t.Fatalf("validate --json: exit %d, %s", code, stdout)
	}
	code, stdout, stderr = runCLI(t, "run", f)
	if code != 0 || !strings.Contains(stderr, want) {
		t.Fatalf("run: exit %d\nstdout %s\nstderr %s\nwant exit 0 with %q on stderr", code, stdout, stderr, want)
	}
}
