package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/proctest"
)

// millrace dev runs a step routed to a worker pool in its own workers: in
// one process there is nobody else to run it (docs/playbooks.md, "Worker
// pools").
func TestDevRunsPooledSteps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := writeFile(t, dir, "routed.yaml", `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: routed, path: e2e/routed}
workflow:
  - step: start
    pool: gpu
    tool: {kind: noop, result: {on: gpu}}
    next: {arcs: [{step: done}]}
  - step: done
    tool: {kind: noop, result: {after: "{{ start.on }}"}}
`)
	stdout, stderr, code := cli(t, nil, "dev", "--run", file, "--once",
		"--data-dir", filepath.Join(dir, "data"), "--nats-port", "-1", "--addr", proctest.FreeAddr(t))
	out := stdout + stderr
	if code != 0 || !strings.Contains(out, "completed") || !strings.Contains(out, `"after": "gpu"`) && !strings.Contains(out, `"after":"gpu"`) {
		t.Fatalf("dev --run of a playbook with a pool (exit %d) should complete with after=gpu:\n%s", code, out)
	}
}
