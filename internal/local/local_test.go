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

// More parallel child playbooks than the dispatcher has slots: a parent
// waiting for its child must not hold a slot the child needs (review
// finding: this deadlocked at 16).
func TestManyChildPlaybooks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("child.yaml", `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: child, path: t/child}
workload: {n: 0}
workflow:
  - step: start
    tool: {kind: noop, result: {double: "{{ n * 2 }}"}}
`)
	parent := write("parent.yaml", `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: parent, path: t/parent}
workflow:
  - step: start
    loop:
      in: "{{ range(20) | list }}"
      iterator: i
      spec: {mode: parallel, max_in_flight: 20}
    tool: {kind: playbook, path: t/child, input: {n: "{{ i }}"}}
    next: {arcs: [{step: count}]}
  - step: count
    tool: {kind: noop, result: {children: "{{ start | length }}"}}
`)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ex, err := local.Run(ctx, parent, nil, local.Options{Concurrency: 16})
	if err != nil {
		t.Fatalf("local run: %v (a deadlock shows up as the timeout)", err)
	}
	if ex.Status != api.ExecCompleted || string(ex.Result) != `{"children":20}` {
		t.Fatalf("execution %s %s (%s); want completed with 20 child results", ex.Status, ex.Result, ex.Error)
	}
}
