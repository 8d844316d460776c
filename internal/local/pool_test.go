package local_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/local"
)

// The local runtime has no pools: a step routed to one runs in process
// like any other.
func TestPoolRunsInProcess(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "routed.yaml")
	if err := os.WriteFile(p, []byte(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: routed, path: t/routed}
workflow:
  - step: start
    pool: gpu
    tool: {kind: noop, result: {on: gpu}}
    next: {arcs: [{step: done}]}
  - step: done
    tool: {kind: noop, result: {after: "{{ start.on }}"}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ex, err := local.Run(ctx, p, nil, local.Options{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != api.ExecCompleted || string(ex.Result) != `{"after":"gpu"}` {
		t.Fatalf("execution %s %s (%s); want completed with {\"after\":\"gpu\"}", ex.Status, ex.Result, ex.Error)
	}
}
