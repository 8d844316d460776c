package storage

import (
	"path/filepath"
	"strings"
	"testing"
)

// A key CheckKey accepts always names a file strictly inside the store's
// directory.
func FuzzCheckKey(f *testing.F) {
	for _, k := range []string{"p/m/a/b/all.parquet", "../x", "a/../../b", "/abs", "a//b", ".", "a/.", "ü/ß.parquet", "a\\..\\b", "..."} {
		f.Add(k)
	}
	root := f.TempDir()
	d := &Dir{root: root}
	f.Fuzz(func(t *testing.T, key string) {
		if CheckKey(key) != nil {
			return
		}
		p, err := d.path(key)
		if err != nil {
			t.Fatalf("accepted %q but no path: %v", key, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
			t.Fatalf("key %q escapes the store: %q", key, p)
		}
		if filepath.ToSlash(rel) != key {
			t.Fatalf("key %q is not its own path (%q)", key, rel)
		}
	})
}
