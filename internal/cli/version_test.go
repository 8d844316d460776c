package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// `millrace version` prints one line; --json gives scripts the same facts.
func TestVersionCommand(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"version", "--json"}} {
		var out, errOut bytes.Buffer
		root := NewRoot(&out, &errOut)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		if len(args) == 1 {
			if got := out.String(); !strings.HasPrefix(got, "millrace "+Version()) || strings.Count(got, "\n") != 1 {
				t.Errorf("version printed %q, want one line: millrace %s", got, Version())
			}
			continue
		}
		var vi versionInfo
		if err := json.Unmarshal(out.Bytes(), &vi); err != nil {
			t.Fatalf("version --json printed %q: %v", out.String(), err)
		}
		if vi.Version == "" || !strings.HasPrefix(vi.Go, "go1.") || !strings.HasPrefix(Version(), vi.Version) {
			t.Errorf("version --json = %+v; want the version %q starts with and a Go version", vi, Version())
		}
	}
}
