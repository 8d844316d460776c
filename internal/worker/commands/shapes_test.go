package commands_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/millrace/millrace/internal/api"
)

// jsonAPI answers every request with body as JSON.
func jsonAPI(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// NoETL's fixtures read an http result as {status_code, headers, data}:
// a later step as <step>.data.<body field> (keychain/google_id_token), a
// task's rule as output.data.<body field> (pagination/fetch_load_test:
// NoETL's output.data is the body). Millrace's own spellings
// (<step>.body, output.data.body) read the same values.
func TestHTTPResultInNoETLShape(t *testing.T) {
	t.Parallel()
	url := jsonAPI(t, `{"meta": {"page": 1, "totalPages": 3}, "rows": [{"id": 1}, {"id": 2}], "data": [10, 20, 30]}`)
	pb := fmt.Sprintf(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: shapes, path: t/shapes}
workflow:
  - step: start
    tool: {kind: http, url: "%[1]s/one"}
    next: {arcs: [{step: pages}]}
  - step: pages
    tool:
      - name: fetch_page
        kind: http
        endpoint: "%[1]s/page"
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' }}"
                then: {do: fail}
              - else:
                  then:
                    do: continue
                    set:
                      iter.has_more: "{{ output.data.meta.page < output.data.meta.totalPages }}"
                      iter.rows: "{{ output.data.rows | length }}"
                      iter.items: "{{ output.data.data | length }}"
                      iter.millrace: "{{ output.data.body.meta.totalPages }}"
                      ctx.http_status: "{{ output.http.status }}"
      - name: summary
        kind: noop
        result: {has_more: "{{ iter.has_more }}", rows: "{{ iter.rows }}", items: "{{ iter.items }}", millrace: "{{ iter.millrace }}"}
    next: {arcs: [{step: check}]}
  - step: check
    tool:
      kind: noop
      result:
        status_code: "{{ start.status_code }}"
        status: "{{ start.status }}"
        data_count: "{{ start.data.data | length if start.data and start.data.data else 0 }}"
        page: "{{ start.data.meta.page }}"
        body_rows: "{{ start.body.rows | length }}"
        pages: "{{ pages }}"
        http_status: "{{ ctx.http_status }}"
`, url)
	const want = `{"body_rows":2,"data_count":3,"http_status":200,"page":1,"pages":{"has_more":true,"items":3,"millrace":3,"rows":2},"status":200,"status_code":200}`
	inBothRuntimes(t, pb, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != want {
			t.Fatalf("execution %s %s (%s); want %s", ex.Status, ex.Result, ex.Error, want)
		}
	})
}

// NoETL's vars_test/test_vars_simple: python code in a task list reads
// `context` (it logs context.keys()), a rule sets ctx from output.data, and
// a single python tool reads an earlier step's result and a workload key
// through context. It failed with "name 'context' is not defined".
const pyContextPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: pyctx, path: t/pyctx}
workload: {user_id: u1}
workflow:
  - step: start
    tool:
      - name: start_task
        kind: python
        input: {}
        code: 'result = {"status": "initialized"}'
    next: {arcs: [{step: set_var}]}
  - step: set_var
    tool:
      - name: set_vars
        kind: python
        libs: {os: os, logging: logging}
        input: {}
        code: |
          logger = logging.getLogger(__name__)
          logger.info(f"DEBUG: context keys = {list(context.keys())}")
          result = {"status": "success", "test_counter": 42, "seen": sorted(k for k in ("start", "workload", "ctx") if k in context)}
        spec:
          policy:
            rules:
              - else:
                  then:
                    do: continue
                    set:
                      ctx.test_counter: '{{ output.data.test_counter }}'
                      ctx.seen: '{{ output.data.seen }}'
    next: {arcs: [{step: get_var}]}
  - step: get_var
    tool:
      kind: python
      code: |
        def main(context):
            return {"start": context["start"]["status"], "user": context.get("user_id"),
                    "counter": context["ctx"]["test_counter"], "seen": context["ctx"]["seen"]}
`

func TestPythonContextInNoETLShape(t *testing.T) {
	t.Parallel()
	const want = `{"counter":42,"seen":["ctx","start","workload"],"start":"initialized","user":"u1"}`
	inBothRuntimes(t, pyContextPlaybook, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != want {
			t.Fatalf("execution %s %s (%s); want %s", ex.Status, ex.Result, ex.Error, want)
		}
	})
}

// NoETL's batch_execution fixtures pass a loop step whole to python and
// read it as {results, stats} (`worker_loop.get("stats", {}) if
// isinstance(worker_loop, dict) else {}`); Millrace's playbooks read it as
// the list. Both work. The NoETL form used to count 0: the code got a list.
const pyLoopPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: pyloop, path: t/pyloop}
workload: {items: [1, 2, 3]}
workflow:
  - step: start
    tool: {kind: noop}
    next: {arcs: [{step: run_batch_workers}]}
  - step: run_batch_workers
    loop: {in: "{{ items }}", iterator: n, spec: {mode: parallel}}
    tool: {kind: noop, result: {n: "{{ n }}"}}
    next: {arcs: [{step: summarize, when: "{{ event.name == 'loop.done' }}"}]}
  - step: summarize
    tool:
      kind: python
      input:
        worker_loop: '{{ run_batch_workers | default({}) }}'
      code: |
        loop_stats = worker_loop.get("stats", {}) if isinstance(worker_loop, dict) else {}
        result = {
            "total": int(loop_stats.get("total", 0) or 0),
            "failed": int(loop_stats.get("failed", 0) or 0),
            "results": len(worker_loop.get("results", [])),
            "sum": sum(r["n"] for r in worker_loop),
            "count": len(worker_loop),
        }
`

func TestLoopResultWholeInPython(t *testing.T) {
	t.Parallel()
	const want = `{"count":3,"failed":0,"results":3,"sum":6,"total":3}`
	inBothRuntimes(t, pyLoopPlaybook, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != want {
			t.Fatalf("execution %s %s (%s); want %s", ex.Status, ex.Result, ex.Error, want)
		}
	})
}

// NoETL's batch_execution fixtures read a postgres step per statement:
// python's db_result.get("command_0", {}).get("rows", []) and templates'
// <step>.command_0.rows. They used to see no rows (an empty {} from get).
func TestSQLResultPerStatementInNoETLShape(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("MILLRACE_TEST_DATABASE_URL")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	pb := fmt.Sprintf(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sqlshape, path: t/sqlshape}
workflow:
  - step: start
    tool: {kind: noop}
    next: {arcs: [{step: validate}]}
  - step: validate
    tool:
      kind: postgres
      connection: %q
      command: "SELECT 7 AS total_items, 7 AS processed_items; SELECT 0 AS missing"
    next: {arcs: [{step: summarize}]}
  - step: summarize
    tool:
      kind: python
      input:
        validation: '{{ validate }}'
        missing: '{{ validate.command_1.rows[0].missing }}'
      code: |
        rows = validation.get("command_0", {}).get("rows", []) if isinstance(validation, dict) else []
        gaps = validation.get("command_1", {}).get("rows", [{}])[0] if isinstance(validation, dict) else {}
        row = rows[0] if rows else {}
        result = {"total": row.get("total_items", 0), "processed": row.get("processed_items", 0),
                  "gaps": gaps.get("missing"), "missing": missing, "last": validation["rows"][0]["missing"]}
`, dsn)
	const want = `{"gaps":0,"last":0,"missing":0,"processed":7,"total":7}`
	inBothRuntimes(t, pb, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != want {
			t.Fatalf("execution %s %s (%s); want %s", ex.Status, ex.Result, ex.Error, want)
		}
	})
}

// NoETL's pagination/pipeline/test_pipeline_simple: a task keeps
// `{{ output }}` in a variable and python reads the page from it as
// http_response.get('data', {}).get('data', []); a later step passes the
// http step whole and reads response.get('data'). Both used to find
// nothing: Millrace's result has no data key.
func TestHTTPOutputWholeInPython(t *testing.T) {
	t.Parallel()
	url := jsonAPI(t, `{"data": [{"id": 1}, {"id": 2}, {"id": 3}], "paging": {"hasMore": false}}`)
	pb := fmt.Sprintf(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: pipe, path: t/pipe}
workflow:
  - step: start
    tool:
      - name: fetch
        kind: http
        url: "%[1]s/api/v1/assessments"
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' }}"
                then: {do: fail}
              - else: {then: {do: continue}}
        set:
          fetch_result: "{{ output }}"
      - name: transform
        kind: python
        input:
          http_response: "{{ fetch_result }}"
        code: |
          response_body = http_response.get('data', {})
          items = response_body.get('data', [])
          result = {'count': len(items), 'has_more': response_body.get('paging', {}).get('hasMore')}
    next: {arcs: [{step: again}]}
  - step: again
    tool: {kind: http, url: "%[1]s/again"}
    next: {arcs: [{step: check}]}
  - step: check
    tool:
      kind: python
      input:
        prior: "{{ start }}"
        response: "{{ again }}"
      code: |
        data = response.get("data", {}) if isinstance(response, dict) else {}
        result = {"prior": prior, "ids": [r["id"] for r in data.get("data", [])], "status": response["status"]}
`, url)
	const want = `{"ids":[1,2,3],"prior":{"count":3,"has_more":false},"status":200}`
	inBothRuntimes(t, pb, func(t *testing.T, ex api.Execution) {
		if ex.Status != api.ExecCompleted || string(ex.Result) != want {
			t.Fatalf("execution %s %s (%s); want %s", ex.Status, ex.Result, ex.Error, want)
		}
	})
}
