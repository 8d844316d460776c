package e2e

// The NoETL corpus: real users' playbooks that must run unchanged in both
// runtimes. Their external resources are local here: PostgreSQL under the
// credential name the file uses, the embedded NATS, and an HTTP stand-in.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
)

// corpusEnv names a directory holding the NoETL corpus, for checkouts
// where it is not at defaultCorpusDir.
const corpusEnv = "MILLRACE_NOETL_CORPUS"

const defaultCorpusDir = "/work/shared/noetl-playbooks"

// corpusFile is one playbook of the corpus that must run unchanged, with
// the files its local run needs next to it.
type corpusFile struct {
	name  string   // test name
	file  string   // path in the corpus
	peers []string // other corpus files registered alongside
}

var corpus = []corpusFile{
	{name: "hello_world", file: "hello_world/hello_world.yaml"},
	{name: "playbook_composition", file: "playbook_composition/playbook_composition.yaml",
		peers: []string{"playbook_composition/user_profile_scorer.yaml"}},
	{name: "duckdb_test", file: "duckdb_test.yaml"},
	{name: "retry_simple_config", file: "retry_test/retry_simple_config.yaml"},
	{name: "test_nats_kv", file: "test_nats_kv.yaml"},
}

func corpusDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(corpusEnv)
	if dir == "" {
		dir = defaultCorpusDir
		if abs, err := filepath.Abs("../../../shared/noetl-playbooks"); err == nil {
			if _, err := os.Stat(abs); err == nil {
				dir = abs // beside the checkout, where CI puts shared/
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "hello_world", "hello_world.yaml")); err != nil {
		t.Fatalf("the NoETL corpus is not at %s (%v); set %s to its directory", dir, err, corpusEnv)
	}
	return dir
}

func readCorpus(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// flakyAPI stands in for retry_simple_config's paginated test server:
// GET /api/v1/flaky answers 503 to every odd-numbered request and 200 to
// every even one, so each of the playbook's three retrying steps fails
// once and succeeds on its retry.
type flakyAPI struct {
	*httptest.Server
	mu   sync.Mutex
	hits []string // "page=..&fail_on=.. -> status"
}

func newFlakyAPI(t *testing.T) *flakyAPI {
	f := &flakyAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/flaky" {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		status := http.StatusOK
		if len(f.hits)%2 == 0 {
			status = http.StatusServiceUnavailable
		}
		f.hits = append(f.hits, fmt.Sprintf("page=%s&fail_on=%s -> %d", r.URL.Query().Get("page"), r.URL.Query().Get("fail_on"), status))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"page":%q,"ok":%t}`, r.URL.Query().Get("page"), status == http.StatusOK)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *flakyAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.hits...)
}

// checkRetryStandIn asserts retry_simple_config retried each of its three
// steps once, sending the params as written in the file.
func checkRetryStandIn(t *testing.T, f *flakyAPI) {
	t.Helper()
	hits := f.requests()
	if len(hits) != 6 {
		t.Fatalf("the stand-in saw %d requests, want 6 (three steps, each retried once): %v", len(hits), hits)
	}
	for i, h := range hits {
		if !strings.HasPrefix(h, "page=1&fail_on=1 -> ") {
			t.Fatalf("request %d was %q: the params did not render as written", i+1, h)
		}
	}
}

// corpusResult checks the final result of each corpus playbook.
func corpusResult(t *testing.T, name string, ex api.Execution) {
	t.Helper()
	mustStatus(t, ex, api.ExecCompleted)
	res, _ := decode(t, ex.Result).(map[string]any)
	switch name {
	case "hello_world", "retry_simple_config":
		if jsonString(res) != `{"status":"complete"}` {
			t.Fatalf("%s result = %s", name, ex.Result)
		}
	case "playbook_composition":
		// validate_results reads each loop iteration's result as the
		// child's profile; Millrace makes a task list's result its last
		// task's (store_result's rows), so the file's own check reports
		// validation_passed false. The profiles themselves are checked in
		// the database (checkProfiles).
		if res["pipeline_status"] != "completed" || num(t, res["users_processed"]) != 4 {
			t.Fatalf("%s result = %s, want 4 users processed", name, ex.Result)
		}
	case "duckdb_test":
		// The file's python reads the duckdb step's result as a list of
		// rows; Millrace returns {rows, ...} (docs: duckdb), so its own
		// check reports test_passed false. It must still complete.
		if res["status"] != "completed" {
			t.Fatalf("%s result = %s", name, ex.Result)
		}
	case "test_nats_kv":
		if res["status"] != "complete" {
			t.Fatalf("%s result = %s", name, ex.Result)
		}
	}
}

// checkProfiles asserts playbook_composition stored one scored row per
// user for execution id.
func checkProfiles(t *testing.T, db string, id int64) {
	t.Helper()
	rows := query(t, db, "SELECT user_name, profile_score, score_category FROM public.user_profile_results WHERE execution_id = $1 ORDER BY user_name", fmt.Sprint(id))
	want := map[string]string{"Alice": "Mid-Level", "Bob": "Mid-Level", "Charlie": "Junior", "Diana": "Senior"}
	if len(rows) != len(want) {
		t.Fatalf("user_profile_results has %d rows for execution %d, want %d: %v", len(rows), id, len(want), rows)
	}
	for _, r := range rows {
		name := r["user_name"].(string)
		score, _ := r["profile_score"].(float64)
		if _, ok := want[name]; !ok || score <= 0 || score > 100 || r["score_category"] == "unknown" {
			t.Fatalf("profile row %v: want a scored, categorised user from the workload", r)
		}
	}
}

// The corpus on a server with two workers, credentials through the API.
func TestCorpusDistributed(t *testing.T) {
	t.Parallel()
	begun := time.Now()
	dir := corpusDir(t)
	c := newFlowCluster(t, 2)
	db := newDatabase(t)
	c.putCredential("pg_local", "postgres", map[string]any{"url": db})
	c.putCredential("nats_credential", "nats", map[string]any{"url": c.nats.URL()})
	flaky := newFlakyAPI(t)

	ids := map[string]int64{}
	for _, cf := range corpus {
		for _, p := range cf.peers {
			c.register(readCorpus(t, dir, p))
		}
		reg := c.register(readCorpus(t, dir, cf.file))
		var payload map[string]any
		if cf.name == "retry_simple_config" {
			payload = map[string]any{"api_url": flaky.URL}
		}
		st, err := c.api.Execute(t.Context(), reg.Path, 0, payload)
		if err != nil {
			t.Fatalf("%s: %v", cf.name, err)
		}
		ids[cf.name] = st.ExecutionID
	}
	for _, cf := range corpus {
		id := ids[cf.name]
		t.Logf("%s: waiting for %s (execution %d)", time.Since(begun).Round(time.Second), cf.name, id) // names the one a timeout is about
		// playbook_composition runs 4 children of 9 python steps one
		// after another: 20 s on an idle machine, over 2 min in CI next to
		// the fault matrix (each python step starts an interpreter).
		ex := c.waitAll([]int64{id}, 5*time.Minute)[0]
		if ex.Status != api.ExecCompleted {
			for _, e := range c.events(id) {
				if e.Error != "" {
					t.Logf("%s: %s %s: %s", cf.name, e.EventType, e.Step, e.Error)
				}
			}
		}
		corpusResult(t, cf.name, ex)
	}

	checkProfiles(t, db, ids["playbook_composition"])
	if kids := c.children(ids["playbook_composition"]); len(kids) != 4 {
		t.Fatalf("playbook_composition started %d children, want one per user (4)", len(kids))
	}
	checkRetryStandIn(t, flaky)
	if n := len(eventsOf(c.events(ids["retry_simple_config"]), "command.retry_scheduled", "")); n != 3 {
		t.Fatalf("retry_simple_config scheduled %d retries, want 3", n)
	}
	// The duckdb step's own result is the query's rows.
	done := eventsOf(c.events(ids["duckdb_test"]), api.EvCommandCompleted, "start")
	var q struct {
		Rows []map[string]any
	}
	if len(done) != 1 || json.Unmarshal(done[0].Result, &q) != nil || jsonString(q.Rows) != `[{"age":30,"name":"Alice"},{"age":35,"name":"Charlie"}]` {
		t.Fatalf("duckdb step result = %v, want Alice and Charlie", done)
	}
	got := eventsOf(c.events(ids["test_nats_kv"]), api.EvCommandCompleted, "kv_get")
	if len(got) != 1 || !strings.Contains(string(got[0].Result), "test@example.com") {
		t.Fatalf("kv_get result = %v, want the value kv_put stored", got)
	}
}

// The corpus in the local runtime, each file copied (with its neighbours)
// into a directory of its own, credentials from --credentials.
func TestCorpusLocal(t *testing.T) {
	t.Parallel()
	dir := corpusDir(t)
	db := newDatabase(t)
	nats, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	creds := writeCredentials(t, map[string]map[string]any{
		"pg_local":        {"url": db},
		"nats_credential": {"url": nats.URL()},
	})
	for _, cf := range corpus {
		t.Run(cf.name, func(t *testing.T) {
			t.Parallel()
			run := t.TempDir()
			for _, p := range append([]string{cf.file}, cf.peers...) {
				writeFile(t, run, filepath.Base(p), readCorpus(t, dir, p))
			}
			args := []string{filepath.Join(run, filepath.Base(cf.file)), "--runtime", "local", "--credentials", creds}
			var flaky *flakyAPI
			if cf.name == "retry_simple_config" {
				flaky = newFlakyAPI(t)
				args = append(args, "--set", "api_url="+flaky.URL)
			}
			ex, code := runJSON(t, args...)
			corpusResult(t, cf.name, ex)
			if code != 0 {
				t.Fatalf("millrace run exited %d for a completed execution", code)
			}
			switch cf.name {
			case "playbook_composition":
				checkProfiles(t, db, ex.ExecutionID)
			case "retry_simple_config":
				checkRetryStandIn(t, flaky)
			}
		})
	}
}
