package worker_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The worker binary must not link the server's engine and store: it
// talks to the server only through package api and the client. A new
// import of flow or store, by the runtime or a stream kind under it,
// directly or through another package, fails here and names the importer.
func TestWorkerLinksNeitherFlowNorStore(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	const mod = "github.com/millrace/millrace/internal/"
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	importers := map[string][]string{} // package -> packages that import it
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			importers[imp] = append(importers[imp], f[0])
		}
	}
	for _, banned := range []string{mod + "flow", mod + "store"} {
		if by, ok := importers[banned]; ok {
			t.Errorf("internal/worker/... depends on %s (imported by %s); the worker must reach the server only through internal/api and internal/client",
				strings.TrimPrefix(banned, mod), strings.Join(by, ", "))
		}
	}
}
