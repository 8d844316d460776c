package cli

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The package map in docs/architecture.md names every package under
// internal/, and nothing that is gone: a newcomer reads it first.
func TestArchitecturePackageMapIsCurrent(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "## Packages")
	if start < 0 {
		t.Fatal(`docs/architecture.md has no "## Packages" section`)
	}
	section = section[start+len("## Packages"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(internal/[a-z0-9_/]+)`").FindAllStringSubmatch(section, -1) {
		listed[m[1]] = true
	}

	root := "../.."
	have := map[string]bool{}
	err = filepath.WalkDir(filepath.Join(root, "internal"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		have[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range have {
		if !listed[p] {
			t.Errorf("package %s is missing from the package map in docs/architecture.md", p)
		}
	}
	for p := range listed {
		if !have[p] {
			t.Errorf("docs/architecture.md's package map lists %s, which has no Go files", p)
		}
	}
}
