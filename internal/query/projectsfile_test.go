package query

import (
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/semantic"
)

// The projects file is decoded strictly, with each project's line kept
// for messages, and its models node handed to semantic with real lines.
func TestParseProjectsFile(t *testing.T) {
	t.Parallel()
	data := []byte(`projects:
  - name: a
    warehouse: {type: postgres, url: "postgres://x"}
  - name: b
    warehouse: {type: duckdb, url: ":memory:"}
    models:
      - name: m
        table: t
        dimensions: [{name: d, type: string}]
        metrics: [{name: c, type: count}]
`)
	f, lines, err := parseProjectsFile("p.yaml", data)
	if err != nil || len(f.Projects) != 2 || lines[0] != 2 || lines[1] != 4 {
		t.Fatalf("parse = %+v lines %v, %v", f, lines, err)
	}
	if f.Projects[0].Models.Kind != 0 {
		t.Fatalf("a project without models has a models node: %+v", f.Projects[0].Models)
	}
	ms, err := semantic.ParseModels("p.yaml", &f.Projects[1].Models)
	if err != nil || len(ms) != 1 || ms[0].Pos.Line != 7 {
		t.Fatalf("models = %+v, %v; want model m at line 7", ms, err)
	}
	_, _, err = parseProjectsFile("p.yaml", []byte("projects:\n  - name: a\n    colour: red\n"))
	if err == nil || !strings.Contains(err.Error(), "p.yaml") || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("unknown key: %v; want the file, line 3 and the key", err)
	}
}

// Whatever the file holds, parsing never panics, and every project has a
// line.
func FuzzParseProjectsFile(f *testing.F) {
	f.Add([]byte("projects:\n  - name: a\n    warehouse: {type: postgres, url: x}\n    models: [{name: m}]\n"))
	f.Add([]byte("{\"projects\": [{\"name\": \"a\"}]}"))
	f.Add([]byte("projects: 3"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, lines, err := parseProjectsFile("f.yaml", data)
		if err != nil {
			return
		}
		if len(lines) != len(pf.Projects) {
			t.Fatalf("%d projects, %d lines", len(pf.Projects), len(lines))
		}
		for i := range pf.Projects {
			if pf.Projects[i].Models.Kind != 0 {
				_, _ = semantic.ParseModels("f.yaml", &pf.Projects[i].Models)
			}
		}
	})
}
