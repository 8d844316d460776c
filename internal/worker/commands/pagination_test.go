package commands_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/local"
)

// pagedAPI stands in for NoETL's paginated records API (the
// fetch_load_test fixture's): GET /records?patientId=&page=&pageSize=
// answers {meta: {page, totalPages}, entry: [...]}. It counts the pages it
// served, and answers one 429 first for one page, which the policy retries.
type pagedAPI struct {
	*httptest.Server
	mu      sync.Mutex
	records map[string]int // patient -> records
	served  map[string]int // "patient/page" -> 200s
	limited map[string]bool
}

func newPagedAPI(t *testing.T, records map[string]int, throttle string) *pagedAPI {
	t.Helper()
	a := &pagedAPI{records: records, served: map[string]int{}, limited: map[string]bool{throttle: false}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		patient := q.Get("patientId")
		page, _ := strconv.Atoi(q.Get("page"))
		size, _ := strconv.Atoi(q.Get("pageSize"))
		n, ok := a.records[patient]
		total := (n + size - 1) / max(size, 1)
		if !ok || r.URL.Path != "/records" || page < 1 || page > total {
			http.NotFound(w, r)
			return
		}
		key := fmt.Sprintf("%s/%d", patient, page)
		a.mu.Lock()
		if done, ok := a.limited[key]; ok && !done {
			a.limited[key] = true
			a.mu.Unlock()
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		a.served[key]++
		a.mu.Unlock()
		var entry []map[string]any
		for i := (page - 1) * size; i < min(page*size, n); i++ {
			entry = append(entry, map[string]any{"id": fmt.Sprintf("%s-%d", patient, i)})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"meta": map[string]any{"page": page, "totalPages": total}, "entry": entry})
	}))
	t.Cleanup(a.Close)
	return a
}

// paginatePlaybook pages through every patient's records in one step, as
// NoETL's fetch_load_test does: init_page sets the iteration's counters,
// fetch_page's rule updates them, paginate jumps back while there are more
// pages, and summary publishes them as the iteration's result. The next
// step reads the loop as NoETL's {results, stats}, in NoETL's python form
// (def main, whose return is the result).
const paginatePlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: paginate, path: t/paginate}
workload:
  api_url: http://unset.invalid
  patients: [P1, P2, P3, P4]
  page_size: 2
workflow:
  - step: start
    tool: {kind: noop}
    next: {arcs: [{step: fetch_all}]}
  - step: fetch_all
    loop:
      in: "{{ patients }}"
      iterator: item
      spec: {mode: parallel, max_in_flight: 3}
    tool:
      - name: init_page
        kind: noop
        spec:
          policy:
            rules:
              - else:
                  then:
                    do: continue
                    set: {iter.page: 1, iter.pages_fetched: 0, iter.records_fetched: 0}
      - name: fetch_page
        kind: http
        url: "{{ api_url }}/records"
        params: {patientId: "{{ iter.item }}", page: "{{ iter.page }}", pageSize: "{{ page_size }}"}
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' and output.http.status == 429 }}"
                then: {do: retry, attempts: 5, backoff: fixed, delay: 0.05}
              - when: "{{ output.status == 'error' }}"
                then: {do: fail}
              - else:
                  then:
                    do: continue
                    set:
                      iter.has_more: "{{ output.data.body.meta.page < output.data.body.meta.totalPages }}"
                      iter.pages_fetched: "{{ (iter.pages_fetched | int) + 1 }}"
                      iter.records_fetched: "{{ (iter.records_fetched | int) + (output.data.body.entry | length) }}"
      - name: paginate
        kind: noop
        spec:
          policy:
            rules:
              - when: "{{ iter.has_more | string | lower == 'true' }}"
                then: {do: jump, to: fetch_page, set: {iter.page: "{{ (iter.page | int) + 1 }}"}}
              - else:
                  then: {do: continue}
      - name: summary
        kind: noop
        result: {patient: "{{ iter.item }}", index: "{{ iter.index }}", pages: "{{ iter.pages_fetched }}", records: "{{ iter.records_fetched }}"}
    next:
      arcs:
        - step: check
          when: "{{ event.name == 'loop.done' }}"
  - step: check
    tool:
      kind: python
      input:
        count: "{{ fetch_all | length }}"
        stats: "{{ fetch_all.stats }}"
        results: "{{ fetch_all.results }}"
      code: |
        def main(count, stats, results):
            return {"count": count, "stats": stats, "results": results}
`

var pageRecords = map[string]int{"P1": 5, "P2": 2, "P3": 7, "P4": 4} // pages of 2: 3, 1, 4, 2

// checkPagination asserts that the run fetched every page exactly once and
// that each iteration's iter counters and the loop's {results, stats} say
// so.
func checkPagination(t *testing.T, ex api.Execution, a *pagedAPI) {
	t.Helper()
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s: %s", ex.Status, ex.Error)
	}
	var got struct {
		Count   int
		Stats   map[string]int
		Results []struct {
			Patient               string
			Index, Pages, Records int
		}
	}
	if err := json.Unmarshal(ex.Result, &got); err != nil {
		t.Fatalf("result %s: %v", ex.Result, err)
	}
	if got.Count != 4 || got.Stats["total"] != 4 || got.Stats["success"] != 4 || got.Stats["failed"] != 0 || len(got.Results) != 4 {
		t.Fatalf("result %s; want 4 results and stats {total 4, success 4, failed 0}", ex.Result)
	}
	for i, p := range []string{"P1", "P2", "P3", "P4"} {
		r, n := got.Results[i], pageRecords[p]
		if pages := (n + 1) / 2; r.Patient != p || r.Index != i || r.Pages != pages || r.Records != n {
			t.Errorf("iteration %d = %+v; want patient %s, %d pages, %d records", i, r, p, pages, n)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, n := range pageRecords {
		for page := 1; page <= (n+1)/2; page++ {
			if c := a.served[fmt.Sprintf("%s/%d", p, page)]; c != 1 {
				t.Errorf("page %s/%d served %d times; want once", p, page, c)
			}
		}
	}
	if len(a.served) != 10 {
		t.Errorf("served %v; want the 10 pages and nothing else", a.served)
	}
	for k, throttled := range a.limited {
		if !throttled {
			t.Errorf("page %s was never asked for (its 429 never happened)", k)
		}
	}
}

// A paginating playbook through the server and a worker.
func TestPaginationDistributed(t *testing.T) {
	t.Parallel()
	a := newPagedAPI(t, pageRecords, "P3/2")
	b := setup(t, 5*time.Second)
	checkPagination(t, b.run(paginatePlaybook, map[string]any{"api_url": a.URL}), a)
}

// The same playbook in the local runtime, which runs task lists with the
// same code (Execute) but no server or NATS.
func TestPaginationLocal(t *testing.T) {
	t.Parallel()
	a := newPagedAPI(t, pageRecords, "P1/3")
	file := filepath.Join(t.TempDir(), "paginate.yaml")
	if err := os.WriteFile(file, []byte(paginatePlaybook), 0o644); err != nil {
		t.Fatal(err)
	}
	ex, err := local.Run(t.Context(), file, map[string]any{"api_url": a.URL}, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkPagination(t, ex, a)
}

// NoETL's vars_test shape: a task's rule sets ctx.* and a later step reads
// it. The set used to be dropped; then it reached only the later tasks of
// the same command, and the next step failed with "attribute not found".
const ctxPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: ctxset, path: t/ctxset}
workflow:
  - step: start
    tool:
      - name: set_vars
        kind: noop
        result: {test_counter: 42, message: hi}
        spec:
          policy:
            rules:
              - else:
                  then:
                    do: continue
                    set:
                      ctx.test_counter: "{{ output.data.test_counter }}"
                      ctx.nested.message: "{{ output.data.message }}"
                      iter.scratch: only for this run
    next: {arcs: [{step: get_var}]}
  - step: get_var
    tool:
      - name: get_vars
        kind: noop
        result:
          counter: "{{ ctx.test_counter }}"
          message: "{{ nested.message }}"
          scratch: "{{ iter.scratch | default('gone') }}"
`

func TestTaskListContextReachesLaterSteps(t *testing.T) {
	t.Parallel()
	const want = `{"counter":42,"message":"hi","scratch":"gone"}`
	inBothRuntimes(t, ctxPlaybook, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != want {
			t.Fatalf("execution %s %s (%s); want %s", ex.Status, ex.Result, ex.Error, want)
		}
	})
}

// `do: break` on a single tool (NoETL's server_oom_stress_test writes
// `else: {then: {do: break}}` on a postgres step) means continue: past a
// failure the step completes with the error envelope as its result.
func TestBreakOnSingleToolContinues(t *testing.T) {
	t.Parallel()
	inBothRuntimes(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: brk, path: t/brk}
workflow:
  - step: start
    tool:
      kind: shell
      cmds: ["exit 3"]
      spec: {policy: {rules: [{else: {then: {do: break}}}]}}
    next: {arcs: [{step: after}]}
  - step: after
    tool: {kind: noop, result: {was: "{{ start.status }}"}}
`, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != `{"was":"error"}` {
			t.Fatalf("execution %s %s (%s); want completed past the failure", ex.Status, ex.Result, ex.Error)
		}
	})
}

// inBothRuntimes runs playbook through a server and a worker and in the
// local runtime, and checks each execution.
func inBothRuntimes(t *testing.T, playbook string, check func(*testing.T, api.Execution)) {
	t.Run("distributed", func(t *testing.T) {
		t.Parallel()
		check(t, setup(t, 5*time.Second).run(playbook, nil))
	})
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "playbook.yaml")
		if err := os.WriteFile(file, []byte(playbook), 0o644); err != nil {
			t.Fatal(err)
		}
		ex, err := local.Run(t.Context(), file, nil, local.Options{})
		if err != nil {
			t.Fatal(err)
		}
		check(t, ex)
	})
}
