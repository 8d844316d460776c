package results

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The results index and its files: a result of n rows reads back page by
// page exactly as written, and a result whose index, data or meta file was
// overwritten with arbitrary bytes reads as rows or an error, never a
// panic or a hang.
func FuzzResultsIndex(f *testing.F) {
	f.Add(uint16(0), uint16(1), uint16(1), uint8(0), []byte{})
	f.Add(uint16(250), uint16(3), uint16(40), uint8(1), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add(uint16(101), uint16(2), uint16(100), uint8(2), []byte("[1,\"a\"]\n[2"))
	f.Add(uint16(10), uint16(1), uint16(10), uint8(3), []byte(`{"version":1,"columns":[],"total_rows":5,"index_every":0,"gen":"x"}`))
	f.Fuzz(func(t *testing.T, nRows, page, pageSize uint16, target uint8, garbage []byte) {
		n := int(nRows % 1000)
		ps := int(pageSize%500) + 1
		pg := int(page%20) + 1
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Create("r")
		if err != nil {
			t.Fatal(err)
		}
		if err := w.SetColumns(testColumns); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := w.Write(fuzzRow(i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
		rows, _, err := s.Page("r", pg, ps)
		start := (pg - 1) * ps
		switch {
		case start >= n && (n > 0 || pg > 1):
			if err == nil {
				t.Fatalf("page %d of %d rows by %d: no error", pg, n, ps)
			}
		case err != nil:
			t.Fatalf("page %d of %d rows by %d: %v", pg, n, ps, err)
		case len(rows) != min(ps, n-start):
			t.Fatalf("page %d of %d rows by %d: %d rows", pg, n, ps, len(rows))
		default:
			for i, r := range rows {
				want, _ := json.Marshal(rowMap(fuzzRow(start + i)))
				got, _ := json.Marshal(r)
				if string(got) != string(want) {
					t.Fatalf("row %d: %s, want %s", start+i, got, want)
				}
			}
		}

		// Corrupt one file and read again: rows or an error, nothing else.
		pattern := []string{"r.*.idx", "r.*.ndjson", "r.meta.json"}[int(target)%3]
		files, _ := filepath.Glob(filepath.Join(s.Dir(), pattern))
		for _, p := range files {
			if err := os.WriteFile(p, garbage, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		_, _, _ = s.Page("r", pg, ps)
		_, _ = s.Meta("r")
		_ = s.Stream("r", discard{})
	})
}

func fuzzRow(i int) []any {
	out := make([]any, len(testColumns))
	for c := range out {
		out[c] = fmt.Sprintf("v%d-%d", i, c)
	}
	return out
}

func rowMap(row []any) map[string]any {
	m := make(map[string]any, len(row))
	for i, c := range testColumns {
		m[c.Name] = row[i]
	}
	return m
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
