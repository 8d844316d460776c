package playbook

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// corpusDir holds real NoETL playbooks (see its README): some must run
// unchanged, every other one must parse or be refused precisely.
var corpusDir = findCorpus()

// findCorpus looks beside the checkout first (where CI puts shared/), then
// at the workplace's fixed location.
func findCorpus() string {
	for _, dir := range []string{os.Getenv("MILLRACE_NOETL_CORPUS"), "../../../shared/noetl-playbooks", "/work/shared/noetl-playbooks"} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	return "../../../shared/noetl-playbooks"
}

// corpusProblem is one expected refusal: line, a substring of the message
// (naming the construct) and of the hint (what to write instead).
type corpusProblem struct {
	line      int
	msg, hint string
}

// corpusGolden lists, per file, exactly the problems expected; a file
// absent from it must parse cleanly.
var corpusGolden = map[string][]corpusProblem{
	"v10_canonical_example.yaml": {
		{57, `unsupported NoETL key "admit" in step spec.policy`, "put a `when` on the arcs"},
	},
}

// corpusMustRun are the files the README says run unchanged (the HTTP ones
// against a local stand-in).
var corpusMustRun = []string{
	"examples/simple_http.yaml",
	"http_test.yaml",
	"hello_world/hello_world.yaml",
	"playbook_composition/playbook_composition.yaml",
	"playbook_composition/user_profile_scorer.yaml",
	"duckdb_test.yaml",
	"retry_test/retry_simple_config.yaml",
	"test_nats_kv.yaml",
}

func TestCorpus(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(corpusDir); errors.Is(err, fs.ErrNotExist) {
		if os.Getenv("CI") != "" {
			t.Fatalf("corpus %s is absent; CI must run these tests (shared/ sits beside the checkout)", corpusDir)
		}
		t.Skipf("corpus %s is absent", corpusDir)
	}
	var seen []string
	err := filepath.WalkDir(corpusDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		rel, _ := filepath.Rel(corpusDir, path)
		rel = filepath.ToSlash(rel)
		seen = append(seen, rel)
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			pb, err := Parse(rel, src, langKinds)
			want := corpusGolden[rel]
			if len(want) == 0 {
				if err != nil {
					t.Fatalf("want no problems, got:\n%v", err)
				}
				if len(pb.Steps) == 0 {
					t.Fatal("parsed without steps")
				}
				return
			}
			var probs Problems
			if !errors.As(err, &probs) {
				t.Fatalf("Parse = %v, want Problems", err)
			}
			if len(probs) != len(want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(probs), len(want), probs)
			}
			for i, w := range want {
				p := probs[i]
				if p.File != rel || p.Line != w.line || p.Col == 0 || !strings.Contains(p.Msg, w.msg) || !strings.Contains(p.Hint, w.hint) {
					t.Errorf("problem %d = %q\nwant %s:%d, msg containing %q, hint containing %q", i, p.Error(), rel, w.line, w.msg, w.hint)
				}
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range slices.Concat(corpusMustRun, slices.Collect(maps.Keys(corpusGolden))) {
		if !slices.Contains(seen, f) {
			t.Errorf("corpus file %s is missing", f)
		}
	}
	for _, f := range seen {
		if _, refused := corpusGolden[f]; !refused && !slices.Contains(corpusMustRun, f) {
			t.Errorf("corpus file %s is new: add it to corpusMustRun or corpusGolden", f)
		}
	}
}
