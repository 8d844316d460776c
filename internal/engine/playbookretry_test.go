package engine

import (
	"testing"

	"github.com/millrace/millrace/internal/playbook"
)

// A playbook tool's NoETL retry ({max_attempts, retry_on: [timeout]})
// retries the child while its error is retryable (a timeout), up to
// max_attempts runs, and fails at once on any other error.
func TestPlaybookToolRetry(t *testing.T) {
	t.Parallel()
	src := "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: r, path: tests/r}\nworkflow:\n" +
		"  - step: start\n    tool:\n      kind: playbook\n      path: child\n      retry: {max_attempts: 2, retry_on: [timeout], delay: 0}\n"
	pb, err := playbook.Parse("r.yaml", []byte(src), playbook.KindSet{"playbook": {"path", "input"}})
	if err != nil {
		t.Fatal(err)
	}
	p := pb.Steps[0].Policy
	s := Scope{Results: map[string]any{}}
	for _, tc := range []struct {
		o    Outcome
		want string
	}{
		{Outcome{Status: StatusFailed, Error: "child timed out", Retryable: true, Attempt: 1}, playbook.DoRetry},
		{Outcome{Status: StatusFailed, Error: "child timed out", Retryable: true, Attempt: 2}, playbook.DoFail},
		{Outcome{Status: StatusFailed, Error: "child failed", Retryable: false, Attempt: 1}, playbook.DoFail},
		{Outcome{Status: StatusCompleted, Result: map[string]any{"ok": true}, Attempt: 1}, playbook.DoContinue},
	} {
		d, err := Decide(p, s, tc.o)
		if err != nil || d.Do != tc.want {
			t.Errorf("%+v: decision %+v, %v; want %s", tc.o, d, err, tc.want)
		}
	}
}
