package helm_test

import (
	"os"
	"strings"
	"testing"
)

// notesOf is the rendered NOTES.txt.
func notesOf(m *manifests) string {
	for file, text := range m.render.files {
		if strings.HasSuffix(file, "NOTES.txt") {
			return text
		}
	}
	return ""
}

// Query results live on a server's own disk: one server by default, and
// more than one without a shared results claim gets a WARNING, since a
// client's poll may reach a server that does not hold the result.
func TestServerReplicasAndQueryResults(t *testing.T) {
	t.Parallel()
	d := mustRender(t, nil)
	if r := deployment(t, d, "server").Spec.Replicas; r == nil || *r != 1 {
		t.Errorf("default server replicas %v, want 1 (results are per pod without server.results.existingClaim)", r)
	}
	cases := []struct {
		vals string
		warn bool
	}{
		{"", false},
		{"server: {replicaCount: 2}", true},
		{"server: {replicaCount: 3, results: {existingClaim: results-rwx}}", false},
		{"server: {replicaCount: 1}", false},
	}
	for _, tc := range cases {
		notes := notesOf(mustRender(t, values(t, tc.vals)))
		got := strings.Contains(notes, "WARNING: server.replicaCount")
		if got != tc.warn {
			t.Errorf("values %q: results WARNING printed %v, want %v:\n%s", tc.vals, got, tc.warn, notes)
		}
		if got {
			for _, want := range []string{"ReadWriteMany", "server.results.existingClaim", "Flows are unaffected"} {
				if !strings.Contains(notes, want) {
					t.Errorf("values %q: the WARNING does not say %q", tc.vals, want)
				}
			}
		}
	}
	for _, doc := range []string{"millrace/README.md", "../../docs/operations.md"} {
		b := readFile(t, doc)
		for _, want := range []string{"ReadWriteMany", "server.results.existingClaim", "Flows are unaffected"} {
			if !strings.Contains(b, want) {
				t.Errorf("%s does not say %q about server replicas and query results", doc, want)
			}
		}
	}
}

// readFile reads a file the test needs, relative to deploy/helm.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
