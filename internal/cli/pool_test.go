package cli

import (
	"bytes"
	"strings"
	"testing"
)

// A worker's pool is checked before it contacts anything: a bad name, or
// a pool on a stream other than commands, is an error naming the setting.
func TestWorkerPoolFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"worker", "--pool", "GPU"}, []string{"MILLRACE_WORKER_POOL", `"GPU"`, "lower-case"}},
		{[]string{"worker", "--pool", "gpu", "--stream", "warehouse"}, []string{"MILLRACE_WORKER_POOL", "--stream commands only", "warehouse"}},
	} {
		root := NewRoot(&bytes.Buffer{}, &bytes.Buffer{})
		// An unreachable server: reaching it would be a different error.
		root.SetArgs(append(tc.args, "--server-url", "http://127.0.0.1:1"))
		err := root.ExecuteContext(t.Context())
		if err == nil {
			t.Fatalf("millrace %s: no error", strings.Join(tc.args, " "))
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("millrace %s: error %q does not contain %q", strings.Join(tc.args, " "), err, w)
			}
		}
	}
}
