package playbook

import (
	"github.com/millrace/millrace/internal/tools"

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
	// It validates now (its admit is a warning); listed so the file is known.
	"v10_canonical_example.yaml": nil,
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

// e2eDir holds NoETL's end-to-end fixtures (see its README).
var e2eDir = findDir("MILLRACE_NOETL_E2E", "noetl-e2e")

func findDir(env, name string) string {
	for _, dir := range []string{os.Getenv(env), "../../../shared/" + name, "/work/shared/" + name} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	return "../../../shared/" + name
}

// e2eRefusal is one expected refusal: its line and the refused construct
// of docs/compat.md it is an instance of.
type e2eRefusal struct {
	line      int
	construct string
}

// e2eGolden lists, per fixture, exactly the refusals expected; every one is
// a construct Millrace deliberately lacks. A fixture absent from it must
// validate (warnings allowed).
var e2eGolden = map[string][]e2eRefusal{
	"api_integration/amadeus_ai_chat_request_query/amadeus_ai_chat_request_query.yaml": {
		{19, "provider keychain"},
		{27, "provider keychain"},
		{36, "provider keychain"},
	},
	// NoETL's own "should error" fixture: refused for what NoETL refuses.
	"broken_playbooks/should_error_tool_is_required.yaml": {
		{29, "step `command`"},
		{39, "step without `tool`"},
	},
	"container_callback_oom/container_callback_oom.yaml": {
		{64, "tool kind `container`"},
	},
	"data_transfer/http_to_databases/http_to_databases.yaml": {
		{45, "tool kind `snowflake`"},
		{84, "tool kind `snowflake`"},
		{129, "tool kind `ducklake`"},
		{254, "tool kind `snowflake`"},
		{295, "tool kind `snowflake`"},
		{347, "tool kind `ducklake`"},
		{401, "tool kind `ducklake`"},
	},
	"data_transfer/http_to_postgres_transfer/http_to_postgres_transfer.yaml": {
		{55, "tool kind `transfer`"},
	},
	"data_transfer/snowflake_postgres/snowflake_postgres.yaml": {
		{33, "tool kind `snowflake`"},
		{72, "tool kind `snowflake`"},
		{103, "tool kind `transfer`"},
		{173, "tool kind `snowflake`"},
		{191, "tool kind `transfer`"},
		{213, "tool kind `snowflake`"},
	},
	"keychain/google_id_token/google_id_token_comparison_test.yaml": {
		{25, "provider keychain"},
		{34, "provider keychain"},
	},
	"keychain/google_id_token/google_id_token_test.yaml": {
		{22, "provider keychain"},
	},
	"ops/execution_ai_analyze/execution_ai_analyze.yaml": {
		{34, "provider keychain"},
	},
	"ops/playbook_ai_explain/playbook_ai_explain.yaml": {
		{22, "provider keychain"},
	},
	"ops/playbook_ai_generate/playbook_ai_generate.yaml": {
		{17, "provider keychain"},
	},
	"root_scripts/test_keychain.yaml": {
		{13, "provider keychain"},
		{17, "provider keychain"},
		{23, "provider keychain"},
	},
	"root_scripts/test_script_loading.yaml": {
		{16, "external `script:`"},
	},
	"script_execution/k8s_job_python_gcs.yaml": {
		{36, "tool kind `script`"},
	},
	"script_execution/postgres_file_example.yaml": {
		{30, "external `script:`"},
	},
	"script_execution/python_file_example.yaml": {
		{30, "external `script:`"},
	},
	"script_execution/python_http_example.yaml": {
		{29, "external `script:`"},
	},
	"spike/spike_failing_subflow.yaml": {
		{39, "step without `tool`"}, // NoETL's validator refuses it too
	},
	"spike/spike_e2e_test.yaml": {
		{98, "tool kind `agent`"},
		{250, "step without `tool`"},
	},
	"subscription/subscription_pubsub_drain.yaml": {
		{61, "tool kind `subscription`"},
		{90, "python `iterator`"},
	},
	"test_gcs_storage.yaml": {
		{63, "tool kind `artifact`"},
	},
}

// Every NoETL end-to-end fixture validates, or is refused only for what
// Millrace deliberately lacks: each refusal names the construct, says
// Millrace lacks it, says what to use instead, and is a refused row of
// docs/compat.md.
func TestCorpusE2E(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(e2eDir); errors.Is(err, fs.ErrNotExist) {
		if os.Getenv("CI") != "" {
			t.Fatalf("corpus %s is absent; CI must run these tests (shared/ sits beside the checkout)", e2eDir)
		}
		t.Skipf("corpus %s is absent", e2eDir)
	}
	kinds := tools.Kinds()
	var seen []string
	err := filepath.WalkDir(e2eDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		rel, _ := filepath.Rel(e2eDir, path)
		rel = filepath.ToSlash(rel)
		seen = append(seen, rel)
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(rel, src, kinds)
			want := e2eGolden[rel]
			var probs Problems
			switch {
			case len(want) == 0 && err != nil:
				t.Fatalf("want it to validate, got:\n%v", err)
			case len(want) == 0:
				return
			case !errors.As(err, &probs):
				t.Fatalf("Parse = %v, want the refusals %v", err, want)
			}
			if len(probs) != len(want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(probs), len(want), probs)
			}
			for i, w := range want {
				p := probs[i]
				row, ok := refusedConstruct(w.construct)
				switch {
				case !ok:
					t.Errorf("construct %q is not a refused row of docs/compat.md", w.construct)
				case p.File != rel || p.Line != w.line || p.Col == 0:
					t.Errorf("problem %d = %q, want line %d (%s)", i, p.Error(), w.line, row.construct)
				case !strings.Contains(p.Msg, "Millrace does not implement") && !strings.Contains(p.Msg, "Millrace lacks") &&
					!strings.Contains(p.Msg, "NoETL refuses this too"):
					t.Errorf("problem %d = %q does not say Millrace lacks the construct (or that NoETL refuses it too)", i, p.Error())
				case len(p.Hint) < 20:
					t.Errorf("problem %d = %q does not say what to use instead", i, p.Error())
				}
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for f := range e2eGolden {
		if !slices.Contains(seen, f) {
			t.Errorf("fixture %s is missing", f)
		}
	}
}
