package e2e

// Error messages a user can act on (issue 10, item 5), through the CLI:
// problems name the user's own file, dev --run checks before it starts,
// a local run says which sibling it skipped, and hints name the construct
// a misplaced key belongs to.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/proctest"
)

// brokenPlaybook has one problem, at line 9 (`to:` written in a step).
const brokenPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: broken_flow
  path: tests/broken_flow
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    to: end
`

// A playbook registered on a server names its real file in its problems,
// by `millrace register` and by `millrace run --runtime distributed`.
func TestRegisterNamesTheFile(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startServer()
	file := writeFile(t, t.TempDir(), "my_broken_flow.yaml", brokenPlaybook)
	for _, args := range [][]string{
		{"register", file, "--server", c.url},
		{"run", file, "--runtime", "distributed", "--server", c.url},
	} {
		stdout, stderr, code := cli(t, nil, args...)
		out := stdout + stderr
		if code == 0 || !strings.Contains(out, file+":9:") || strings.Contains(out, "playbook.yaml") {
			t.Fatalf("millrace %s (exit %d) should fail naming %s:9, not playbook.yaml:\n%s", args[0], code, file, out)
		}
	}
}

// dev --run validates the playbook before it starts anything: no stack,
// no data directory, a non-zero exit with file:line.
func TestDevRunValidatesFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := writeFile(t, dir, "broken.yaml", brokenPlaybook)
	data := filepath.Join(dir, "data")
	stdout, stderr, code := cli(t, nil, "dev", "--run", file, "--once", "--data-dir", data, "--nats-port", "-1", "--addr", proctest.FreeAddr(t))
	out := stdout + stderr
	if code == 0 || !strings.Contains(out, file+":9:") || !strings.Contains(out, "nothing was started") {
		t.Fatalf("dev --run of an invalid playbook (exit %d) should fail with %s:9 and say nothing started:\n%s", code, file, out)
	}
	if strings.Contains(out, "millrace dev is up") || strings.Contains(out, "NATS started") {
		t.Fatalf("dev started its stack for an invalid playbook:\n%s", out)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("dev created its data directory %s for an invalid playbook (stat: %v)", data, err)
	}
}

// A local run registers the playbooks beside the file; it says on stderr
// which of them it skipped because they do not validate, and why, and
// says nothing of YAML files that are not playbooks.
func TestLocalRunSaysWhichSiblingItSkipped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	main := writeFile(t, dir, "main.yaml", `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: main, path: tests/main}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'ok': True}"}
`)
	broken := writeFile(t, dir, "broken.yaml", brokenPlaybook)
	writeFile(t, dir, "data.yaml", "rows: [1, 2, 3]\n")
	stdout, stderr, code := cli(t, nil, "run", main, "--runtime", "local")
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(stdout), "\n"+`{"ok":true}`) {
		t.Fatalf("millrace run (exit %d) printed %q, want {\"ok\":true}\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "skipped "+broken) || !strings.Contains(stderr, broken+":9:") {
		t.Fatalf("a local run should say it skipped %s and why (%s:9):\n%s", broken, broken, stderr)
	}
	if strings.Contains(stderr, "data.yaml") || strings.Contains(stderr, "main.yaml") {
		t.Fatalf("a local run should not report data.yaml (not a playbook) or the main file as skipped:\n%s", stderr)
	}
}

// Hints point at the construct a key belongs to: `to` is a jump target
// (not "did you mean do/tool"), and `query` is NoETL's alias of postgres's
// command.
func TestHintsNameTheConstruct(t *testing.T) {
	t.Parallel()
	file := writeFile(t, t.TempDir(), "hints.yaml", `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: hints, path: tests/hints}
workflow:
  - step: start
    to: load
    tool: {kind: postgres, auth: pg, querys: "SELECT 1"}
    next: {arcs: [{step: load}]}
  - step: load
    tool: {kind: python, query: "SELECT 1", code: "result = 1"}
`)
	stdout, stderr, code := cli(t, nil, "validate", file)
	out := stdout + stderr
	for _, want := range []string{
		file + `:6:5: unknown key "to" in step (hint: ` + "`to` is a jump target",
		file + `:7:38: unknown key "querys" in postgres tool (hint: did you mean "query" (NoETL's alias of "command")?)`,
		file + `:10:26: unknown key "query" in python tool (hint: "query" is a postgres tool's alias of "command"; allowed keys here: kind, `,
	} {
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("validate (exit %d) should say\n  %s\ngot:\n%s", code, want, out)
		}
	}
	if strings.Contains(out, `did you mean "tool"`) || strings.Contains(out, `did you mean "do"`) {
		t.Errorf("a hint points `to` at an unrelated key:\n%s", out)
	}
}
