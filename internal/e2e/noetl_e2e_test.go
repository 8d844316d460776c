package e2e

// NoETL's own end-to-end fixtures (shared/noetl-e2e), run unchanged in
// both runtimes wherever their resources can be local: PostgreSQL under
// every credential name the files use, the embedded NATS, and an HTTP
// stand-in whose URL replaces the unreachable hosts through the workload
// (`--set`), never by editing a file. noetlE2E lists every playbook of the
// tree: it runs here, or it says why not; docs/compat.md's "Which fixtures
// run here" section is rendered from it (TestNoETLE2ECompatDoc).

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/tools"
)

// e2eCorpusEnv names the noetl-e2e directory for checkouts where it is not
// beside the repository.
const e2eCorpusEnv = "MILLRACE_NOETL_E2E"

// e2eFixture is one playbook of the tree. A fixture with a reason does not
// run here; one without runs in both runtimes.
type e2eFixture struct {
	file   string
	reason string
	// sets are --set overrides; "{stand-in}" becomes the stand-in's URL.
	sets []string
	// peers are files the distributed run registers first (the local
	// runtime finds them beside the file).
	peers []string
	// check is the fixture's own check, beyond completing, where its
	// final result does not carry it; ownCheck reads the result either way.
	check func(t *testing.T, ex api.Execution)
	// standIn checks what the stand-in saw, after the run.
	standIn func(t *testing.T, s *e2eStandIn)
	// chance is the error a fixture that fails by design some of the time
	// ends with when it does: then that failure, not completion, is the
	// behaviour to check.
	chance string
}

// Reasons shared by several fixtures.
const (
	whyInvalid         = "refused by validation: a step without a tool (NoETL refuses it too; see the construct table in this file)"
	whyRefused         = "refused: uses a construct Millrace deliberately lacks (see the construct table in this file)"
	whyCloud           = "needs cloud services (GCS, GKE, Google ADC) that have no local stand-in"
	whyNoETLPy         = "its python imports NoETL's own modules (noetl.worker.secrets), which are not Millrace's"
	whyPsycopg         = "its python imports psycopg, which is not installed for the python tool here"
	whyDataSeeded      = "reads tables that a parent or setup playbook (not runnable here) fills; alone it fails on the missing relation"
	whyHTTPData        = "its python reads an http result's payload as `.get('data')`, the shape of NoETL's Python-era http tool; templates read `.data` as the body, but the result python receives keeps it under `body`, as NoETL's current Rust tool does"
	whyNoStandIn       = "needs an endpoint of NoETL's paginated test server (reference-chain, patient-records, heavy, pft) that the stand-in does not serve yet"
	whyWorkerElsewhere = "its chunk worker playbook is in another directory of the tree, which the local runtime does not register (it registers the main file's siblings), and the worker posts to httpbin at a URL of its own workload"
	whyArgsGlobal      = "its python reads NoETL's Python-era `args` global, which Millrace's python tool does not bind (it binds input_data, context and the input's keys)"
)

var noetlE2E = []e2eFixture{
	{file: "actions_test.yaml", reason: "completes, but its own check reads ctx.loop_results, which nothing in the file sets (its loop sets iter.loop_result per iteration), so success is false"},
	{file: "api_integration/amadeus_ai_chat_request_query/amadeus_ai_chat_request_query.yaml", reason: whyRefused},
	{file: "api_integration/auth0/auth0_login.yaml", reason: whyArgsGlobal},
	{file: "api_integration/auth0/auth0_login_optimized.yaml", reason: "validates an Auth0 JWT from its workload; without Auth0 it reports Invalid JWT format"},
	{file: "api_integration/auth0/auth0_validate_session.yaml", reason: "reads auth.sessions, which NoETL's auth schema (not part of the fixtures) creates"},
	{file: "api_integration/auth0/check_playbook_access.yaml", reason: "reads auth.sessions, which NoETL's auth schema (not part of the fixtures) creates"},
	{file: "api_integration/auth0/get_auth0_token.yaml", reason: "asks Auth0 (an OAuth provider) for a token with a credential named in the workload; there is no local Auth0"},
	{file: "api_integration/auth0/setup_admin_permissions.yaml", reason: "writes auth.playbook_permissions, which NoETL's auth schema (not part of the fixtures) creates"},
	{file: "api_integration/auth0/test_auth0_full_flow.yaml", reason: "calls get_auth0_token, which needs Auth0"},
	{file: "api_integration/auth0/user_management.yaml", reason: "reads auth.users, which NoETL's auth schema (not part of the fixtures) creates"},
	{file: "api_integration/quantum_networking/quantum_networking_runner.yaml", reason: "its workload values are templates (`provider: \"{{ env.QUANTUM_PROVIDER | default('nvidia_simulator') }}\"`), which Millrace passes to steps as text, so it reports an unsupported provider"},
	{file: "atomic_item_context.yaml"},
	{file: "batch_execution/heavy_payload_pipeline_chunk_worker/heavy_payload_pipeline_chunk_worker.yaml", reason: whyDataSeeded},
	{file: "batch_execution/heavy_payload_pipeline_in_step/heavy_payload_pipeline_in_step.yaml", reason: whyWorkerElsewhere},
	{file: "batch_execution/kind_playbook_lease_expiry/kind_playbook_lease_expiry.yaml", reason: whyDataSeeded},
	{file: "batch_execution/kind_playbook_lease_expiry_worker/kind_playbook_lease_expiry_worker.yaml", reason: whyDataSeeded},
	{file: "batch_execution/multi_playbook_batch/multi_playbook_batch.yaml", reason: "calls child playbooks by NoETL catalog paths (fixtures/playbooks/...) and public weather/httpbin APIs"},
	{file: "batch_execution/parallel_distributed_claim_regression/parallel_distributed_claim_regression.yaml", reason: "calls its worker by NoETL catalog path fixtures/playbooks/..., which is not the worker's own metadata.path"},
	{file: "batch_execution/parallel_distributed_claim_regression_worker/parallel_distributed_claim_regression_worker.yaml", reason: "a worker playbook: alone it waits on claims its parent creates"},
	{file: "batch_execution/server_oom_stress_chunk_worker_v2/server_oom_stress_chunk_worker_v2.yaml", reason: whyDataSeeded},
	{file: "batch_execution/server_oom_stress_test/server_oom_stress_test.yaml", reason: "calls its chunk worker fixtures/playbooks/batch_execution/server_oom_stress_chunk_worker, which is not in the tree (only the _v2 worker is)"},
	{file: "batch_execution/server_oom_stress_test_v2/server_oom_stress_test_v2.yaml", reason: whyWorkerElsewhere},
	{file: "batch_execution/traveler_batch_enrichment_chunk_worker/traveler_batch_enrichment_chunk_worker.yaml", reason: whyDataSeeded},
	{file: "batch_execution/traveler_batch_enrichment_in_step/traveler_batch_enrichment_in_step.yaml", reason: whyWorkerElsewhere},
	{file: "broken_playbooks/should_error_tool_is_required.yaml", reason: "broken on purpose: must be refused (it is)"},
	{file: "broken_sql.yaml", reason: "broken on purpose: its SQL fails (it does, in both runtimes)"},
	{file: "cache_test/test_cache_simple.yaml", reason: "calls OpenAI with a secret_manager provider keychain, which Millrace refuses"},
	{file: "container_callback_oom/container_callback_oom.yaml", reason: whyRefused},
	{file: "data_processing/wikipedia_processing/wikipedia_processing.yaml", reason: "its URL is literal (not a workload value a stand-in can replace)"},
	{file: "data_transfer/http_iterator_save_postgres/http_iterator_save_postgres.yaml", reason: "its open-meteo URL is literal in the file, not a workload value a stand-in can replace"},
	{file: "data_transfer/http_to_databases/http_to_databases.yaml", reason: whyRefused},
	{file: "data_transfer/http_to_postgres_direct/http_to_postgres_direct.yaml", sets: []string{"api_url={stand-in}/posts"}},
	{file: "data_transfer/http_to_postgres_simple/http_to_postgres_simple.yaml", reason: "a task's `set: {extracted: \"{{ output }}\"}` stores the output envelope {status, data, ...} (as NoETL's `output` is that envelope too; its task runner does not apply a task-level `set` at all), and the next task reads extracted.id_0 as if it were the python result; `{{ output.data }}` would be"},
	{file: "data_transfer/http_to_postgres_transfer/http_to_postgres_transfer.yaml", reason: whyRefused},
	{file: "data_transfer/snowflake_postgres/snowflake_postgres.yaml", reason: whyRefused},
	{file: "deployment/deploy_gateway_kind.yaml", reason: "deploys NoETL's gateway to a kind Kubernetes cluster with kubectl; there is no cluster here"},
	{file: "duckdb_gcs_workload_identity/duckdb_gcs_workload_identity.yaml", reason: whyCloud},
	{file: "duckdb_test.yaml", reason: "completes, but its own check reads the duckdb step's result as a bare list of rows; Millrace's is {rows, ...}, and so are NoETL's own duckdb tools' (a mapping in both), so test_passed is false"},
	{file: "examples/simple_http.yaml", sets: []string{"api_url={stand-in}"}},
	{file: "examples/variable_lifecycle_example.yaml", reason: "its URL api.example.com is literal in a task, and it templates payload.user_id, which it never defines"},
	{file: "hello_world/hello_world.yaml"},
	{file: "http_test.yaml", sets: []string{"api_url={stand-in}"}},
	{file: "interactive_brokers/ib_gateway_test.yaml", reason: "needs an Interactive Brokers gateway at https://localhost:15000"},
	{file: "interactive_brokers/ibkr_api.yaml", reason: whyNoETLPy},
	{file: "interactive_brokers/ibkr_gateway_maintain.yaml", reason: whyNoETLPy},
	{file: "interactive_brokers/ibkr_gateway_verify.yaml", reason: whyNoETLPy},
	{file: "interactive_brokers/ibkr_history.yaml", reason: whyNoETLPy},
	{file: "keychain/google_id_token/google_id_token_comparison_test.yaml", reason: whyRefused},
	{file: "keychain/google_id_token/google_id_token_test.yaml", reason: whyRefused},
	{file: "load_test/reference_chain_loop_stress/reference_chain_loop_stress.yaml", reason: whyNoStandIn},
	{file: "load_test/state_report_synthetic_load/state_report_synthetic_load.yaml", reason: "a load test: it completes in both runtimes now that `job` is bound (alone in about a minute), but beside the other fixtures on a shared machine it runs past the runner's 90 s budget"},
	{file: "load_test/state_report_synthetic_load/state_report_synthetic_load_worker.yaml", reason: whyDataSeeded},
	{file: "loop_test.yaml"},
	{file: "ops/execution_ai_analyze/execution_ai_analyze.yaml", reason: whyRefused},
	{file: "ops/playbook_ai_explain/playbook_ai_explain.yaml", reason: whyRefused},
	{file: "ops/playbook_ai_generate/playbook_ai_generate.yaml", reason: whyRefused},
	{file: "pagination/fetch_load_test/test_fetch_load.yaml", reason: whyNoStandIn},
	{file: "pagination/offset/test_pagination_offset.yaml", sets: []string{"api_url={stand-in}"}, standIn: checkOffsetPages, check: checkOffsetUsers},
	{file: "pagination/pipeline/test_pagination_pipeline.yaml", reason: whyHTTPData},
	{file: "pagination/pipeline/test_pipeline_error_handling.yaml", reason: whyHTTPData},
	{file: "pagination/pipeline/test_pipeline_heavy_payload.yaml", reason: whyNoStandIn},
	{file: "pagination/pipeline/test_pipeline_simple.yaml", reason: whyHTTPData},
	{file: "pagination/pipeline_v2/test_pagination_pipeline_v2.yaml", reason: whyHTTPData},
	{file: "pagination/retry/test_pagination_retry.yaml", reason: whyHTTPData},
	{file: "pft_flow_test/pft_queue_db_maintenance.yaml", reason: whyPsycopg},
	{file: "pft_flow_test/test_mds_batch_worker.yaml", reason: whyDataSeeded},
	{file: "pft_flow_test/test_pft_flow.yaml", reason: whyNoStandIn},
	{file: "pft_flow_test/test_pft_flow_v2.yaml", sets: []string{"api_url={stand-in}", "num_facilities=2", "patients_per_facility=3"}, standIn: checkPFTRecords},
	{file: "pft_flow_test/test_pft_page_continuation.yaml", sets: []string{"api_url={stand-in}"}, standIn: checkPatientPages},
	{file: "playbook_composition/playbook_composition.yaml", reason: "completes (4 children score 4 users), but its own check reads each loop iteration as the child's profile; Millrace's is the task list's last task (NoETL's engine records an iteration as the map of task results, not the child's profile either), so validation_passed is false"},
	{file: "playbook_composition/user_profile_scorer.yaml"},
	{file: "postgres_excel_gcs_test/postgres_excel_gcs_test.yaml", reason: whyCloud},
	{file: "postgres_test.yaml", reason: "queries NoETL's own catalog tables (noetl.catalog) under pg_noetl_k8s"},
	{file: "python_psycopg/http_to_postgres_bulk/http_to_postgres_bulk_python.yaml", reason: whyPsycopg},
	{file: "quantum_cudaq/quantum_cudaq.yaml", sets: []string{"problem_catalog_url={stand-in}/problems", "http_endpoint={stand-in}/quantum/results"}, check: checkQuantumNotes},
	{file: "regression_test/create_test_schema.yaml"},
	{file: "regression_test/master_regression_test_parallel.yaml", reason: "runs every fixture by NoETL catalog path (fixtures/playbooks/...), including ones held back from this tree (save_storage_test/...)"},
	{file: "retry_test/duckdb_retry_query.yaml"},
	{file: "retry_test/http_retry_with_stop.yaml", sets: []string{"test_url={stand-in}/get"}},
	{file: "retry_test/postgres_retry_connection.yaml"},
	// Its python raises on 69% of attempts, so all 5 attempts fail
	// together in about one run of six: then its retry policy must have
	// given up after exactly 5.
	{file: "retry_test/python_retry_exception.yaml", chance: "gave up after 5 attempts: python: python code raised Exception: Random failure"},
	{file: "retry_test/retry_simple_config.yaml", sets: []string{"api_url={stand-in}"}},
	{file: "root_scripts/test_keychain.yaml", reason: whyRefused},
	{file: "root_scripts/test_script_loading.yaml", reason: whyRefused},
	{file: "root_scripts/test_simple_loop.yaml"},
	{file: "script_execution/k8s_job_python_gcs.yaml", reason: whyRefused},
	{file: "script_execution/postgres_file_example.yaml", reason: whyRefused},
	{file: "script_execution/python_file_example.yaml", reason: whyRefused},
	{file: "script_execution/python_http_example.yaml", reason: whyRefused},
	{file: "simple_python.yaml"},
	{file: "spike/spike_e2e_test.yaml", reason: whyInvalid},
	{file: "spike/spike_failing_subflow.yaml", reason: "broken on purpose: must be refused: its end step has no tool, which NoETL's validator refuses too (its parent spike_e2e_test expects it to fail)"},
	{file: "subscription/subscription_pubsub_drain.yaml", reason: whyRefused},
	{file: "test_args_passing.yaml"},
	{file: "test_gcs_storage.yaml", reason: whyCloud},
	{file: "test_gke_lifecycle/test_gke_lifecycle.yaml", reason: whyCloud},
	{file: "test_nats_kv.yaml"},
	{file: "test_oversize_command_context.yaml"},
	{file: "test_resolve_by_urn.yaml"},
	{file: "test_start_with_action.yaml"},
	{file: "tradedb/tradedb_bootstrap.yaml"},
	{file: "tradedb/tradedb_create_db.yaml"},
	{file: "tutorials/internet_postgres_gcs/internet_postgres_gcs_hmac.yaml", reason: whyCloud},
	{file: "v10_canonical_example.yaml", reason: "reads a task list's result as `process_data.results.<task>`; Millrace's task-list result is its last task's (with the stand-in it fails there)"},
	{file: "vars_test/test_vars_api.yaml"},
	{file: "vars_test/test_vars_block.yaml", reason: "its task rule sets ctx from `output.response`, a key of NoETL's Python-era output envelope that Millrace's output lacks"},
	{file: "vars_test/test_vars_simple.yaml"},
	{file: "vars_test/test_vars_template_access.yaml"},
}

// e2ePostgresNames are the credential names the fixtures use for
// PostgreSQL; each points at the run's fresh database.
var e2ePostgresNames = []string{"pg_k8s", "pg_local", "pg_auth", "pg_trade", "test_postgres", "pg_noetl_k8s"}

func e2eCorpusDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(e2eCorpusEnv)
	if dir == "" {
		dir = "/work/shared/noetl-e2e"
		if abs, err := filepath.Abs("../../../shared/noetl-e2e"); err == nil {
			if _, err := os.Stat(abs); err == nil {
				dir = abs
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "hello_world", "hello_world.yaml")); err != nil {
		t.Fatalf("NoETL's e2e fixtures are not at %s (%v); set %s to their directory", dir, err, e2eCorpusEnv)
	}
	return dir
}

// TestNoETLE2EListed: every playbook of the tree is in noetlE2E, once, so
// a new fixture cannot go unaccounted for.
func TestNoETLE2EListed(t *testing.T) {
	t.Parallel()
	dir := e2eCorpusDir(t)
	var onDisk []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml")) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "\nkind: Playbook") || strings.HasPrefix(string(b), "kind: Playbook") {
			rel, _ := filepath.Rel(dir, p)
			onDisk = append(onDisk, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, f := range noetlE2E {
		listed = append(listed, f.file)
	}
	slices.Sort(onDisk)
	if !slices.IsSorted(listed) || len(slices.Compact(slices.Clone(listed))) != len(listed) {
		t.Fatalf("noetlE2E must be sorted by file with no duplicates")
	}
	for _, f := range onDisk {
		if !slices.Contains(listed, f) {
			t.Errorf("fixture %s is not in noetlE2E: add it, runnable or with the reason it cannot run here", f)
		}
	}
	for _, f := range listed {
		if !slices.Contains(onDisk, f) {
			t.Errorf("noetlE2E lists %s, which is not a playbook in %s", f, dir)
		}
	}
	// A fixture listed as not validating must still not validate, and any
	// other must validate, so the reasons stay true as the parser grows.
	for _, f := range noetlE2E {
		b, err := os.ReadFile(filepath.Join(dir, f.file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = playbook.Parse(f.file, b, tools.Kinds())
		invalid := f.reason == whyInvalid || f.reason == whyRefused || strings.HasPrefix(f.reason, "broken on purpose: must be refused")
		switch {
		case invalid && err == nil:
			t.Errorf("%s validates now: run it here, or give the reason it cannot run", f.file)
		case !invalid && err != nil && f.reason != whyCloud:
			t.Errorf("%s does not validate, but noetlE2E gives another reason (%s):\n%v", f.file, f.reason, err)
		}
	}
}

// ownCheck is a fixture's own verdict in its final result: any of the
// flags NoETL's fixtures set must be true, and a status or error field
// must not report failure.
func ownCheck(t *testing.T, res map[string]any) {
	t.Helper()
	for _, k := range []string{"test_passed", "all_passed", "validation_passed", "verified", "success"} {
		if v, ok := res[k]; ok && v != true {
			t.Fatalf("the fixture's own check failed: %s = %v in %s", k, v, jsonString(res))
		}
	}
	if s, _ := res["status"].(string); s == "failed" || s == "error" {
		t.Fatalf("the fixture reports status %q: %s", s, jsonString(res))
	}
	if e, ok := res["error"]; ok && e != nil && e != "" {
		t.Fatalf("the fixture reports an error: %s", jsonString(res))
	}
}

// e2eStandIn answers every host the runnable fixtures call: httpbin's
// /get and /anything, NoETL's /health, jsonplaceholder's /posts and the
// paginated test server's flaky endpoint (503 on every odd request, so
// each retrying step fails once, then succeeds). One per fixture run, so
// the flaky count is the fixture's own.
type e2eStandIn struct {
	*httptest.Server
	mu   sync.Mutex
	hits int      // flaky requests
	seen []string // paged requests, "path?query"
}

func (s *e2eStandIn) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

func newE2EStandIn(t *testing.T) *e2eStandIn {
	t.Helper()
	s := &e2eStandIn{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/get" || strings.HasPrefix(r.URL.Path, "/anything"):
			args := map[string]string{}
			for k, v := range r.URL.Query() {
				args[k] = v[0]
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"args": args, "url": r.URL.String(), "origin": "stand-in"})
		case r.URL.Path == "/data":
			// v10_canonical_example's API: a list of items.
			_ = json.NewEncoder(w).Encode([]map[string]any{{"id": 1, "value": 10}, {"id": 2, "value": 20}, {"id": 3, "value": 30}})
		case strings.HasPrefix(r.URL.Path, "/problems/"):
			// quantum_cudaq's problem catalog.
			_ = json.NewEncoder(w).Encode(map[string]any{"id": strings.TrimPrefix(r.URL.Path, "/problems/"), "qubits": 8, "default_depth": 2})
		case r.URL.Path == "/quantum/results" && r.Method == http.MethodPost:
			// quantum_cudaq's collaborator service, behind a bearer token.
			if r.Header.Get("Authorization") != "Bearer stand-in-token" {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"error":"unauthorized"}`)
				return
			}
			fmt.Fprint(w, `{"accepted":true}`)
		case r.URL.Path == "/health":
			fmt.Fprint(w, `{"status":"ok"}`)
		case r.URL.Path == "/posts":
			var posts []map[string]any
			for i := 1; i <= 10; i++ {
				posts = append(posts, map[string]any{"userId": (i-1)/5 + 1, "id": i, "title": fmt.Sprintf("post %d", i), "body": fmt.Sprintf("body of post %d", i)})
			}
			_ = json.NewEncoder(w).Encode(posts)
		case r.URL.Path == "/api/v1/users":
			// The paginated test server's users: 35, paged by offset and limit.
			s.mu.Lock()
			s.seen = append(s.seen, r.URL.Path+"?"+r.URL.Query().Encode())
			s.mu.Unlock()
			offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
			limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			limit = cmp.Or(limit, 10)
			users := []map[string]any{}
			for id := offset + 1; id <= min(offset+limit, 35); id++ {
				users = append(users, map[string]any{"id": id, "name": fmt.Sprintf("user %d", id)})
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"users": users, "has_more": offset+limit < 35, "total": 35})
		case strings.HasPrefix(r.URL.Path, "/api/v1/patient/"):
			// The paginated test server's patient records (PFT): one record
			// per page, a fixed page count per data type.
			dt := strings.TrimPrefix(r.URL.Path, "/api/v1/patient/")
			pages := patientPages[dt]
			if pages == 0 {
				http.NotFound(w, r)
				return
			}
			q := r.URL.Query()
			page, _ := strconv.Atoi(q.Get("page"))
			s.mu.Lock()
			s.seen = append(s.seen, fmt.Sprintf("%s/%s/%s", dt, q.Get("patientId"), q.Get("page")))
			s.mu.Unlock()
			record := map[string]any{"patientId": q.Get("patientId"), "type": dt, "page": page}
			if dt == "assessments" { // pft_flow_v2 fetches each assessment's MDS details
				record["mdsAssessmentIds"] = []string{"mds-" + q.Get("patientId")}
			}
			// The payload comes wrapped in {"data": ...}, as the engine's
			// reading of NoETL's output.data (the body) implies for this
			// server: the fixtures store output.data.data as the page
			// {data, paging} and read output.data.data.rows of the MDS
			// details.
			_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
				"data":   []map[string]any{record},
				"paging": map[string]any{"page": page, "hasMore": page < pages, "total": pages}}})
		case r.URL.Path == "/api/v1/pft/mds/details":
			// The PFT server's MDS assessment details, one row per id.
			id := r.URL.Query().Get("assessmentId")
			_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"rows": []map[string]any{{"assessment_id": id, "payload": map[string]any{"assessmentId": id, "items": 3}}}}})
		case r.URL.Path == "/api/v1/flaky":
			s.mu.Lock()
			s.hits++
			fail := s.hits%2 == 1
			s.mu.Unlock()
			if fail {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			fmt.Fprintf(w, `{"page":%q,"ok":%t}`, r.URL.Query().Get("page"), !fail)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// runArgs are the --set flags of f against the stand-in at url.
func (f e2eFixture) runArgs(url string) []string {
	var out []string
	for _, s := range f.sets {
		out = append(out, "--set", strings.ReplaceAll(s, "{stand-in}", url))
	}
	return out
}

func (f e2eFixture) name() string {
	return strings.TrimSuffix(strings.TrimSuffix(f.file, ".yaml"), ".yml")
}

// checkE2ERun asserts the fixture completed and passed its own check.
func checkE2ERun(t *testing.T, f e2eFixture, ex api.Execution, code int) {
	t.Helper()
	if f.chance != "" && ex.Status == api.ExecFailed && strings.Contains(ex.Error, f.chance) {
		if code == 0 {
			t.Fatalf("millrace run exited 0 for a failed execution")
		}
		t.Logf("failed by the fixture's own chance, as its policy allows: %s", ex.Error)
		return
	}
	mustStatus(t, ex, api.ExecCompleted)
	if code != 0 {
		t.Fatalf("millrace run exited %d for a completed execution", code)
	}
	res, _ := decode(t, ex.Result).(map[string]any)
	ownCheck(t, res)
	if f.check != nil {
		f.check(t, ex)
	}
}

// patientPages is how many pages the stand-in's patient records have, by
// data type (test_pft_page_continuation's four).
var patientPages = map[string]int{"assessments": 3, "conditions": 2, "medications": 2, "vital_signs": 1, "demographics": 1}

// checkPatientPages: test_pft_page_continuation's cursor loop drained its
// work table, each claimed row one request, and each page's hasMore queued
// the next: every page of every patient (10) and data type was requested
// exactly once. (The fixture's own verify_pages step checks the tables.)
func checkPatientPages(t *testing.T, s *e2eStandIn) {
	t.Helper()
	got := slices.Sorted(slices.Values(s.requests()))
	var want []string
	for dt, pages := range patientPages {
		if dt == "demographics" {
			continue // not one of test_pft_page_continuation's data types
		}
		for p := 1; p <= 10; p++ {
			for pg := 1; pg <= pages; pg++ {
				want = append(want, fmt.Sprintf("%s/%d/%d", dt, p, pg))
			}
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("stand-in saw %d patient page requests %v, want each of %d pages once", len(got), got, len(want))
	}
}

// checkPFTRecords: test_pft_flow_v2 (2 facilities of 3 patients here)
// drained each facility's five per-patient cursor queues in turn: every
// patient's first page of each data type was requested exactly once.
func checkPFTRecords(t *testing.T, s *e2eStandIn) {
	t.Helper()
	got := slices.Sorted(slices.Values(s.requests()))
	var want []string
	for dt := range patientPages {
		page := "1"
		if dt == "demographics" {
			page = "" // one record per patient, no page
		}
		for p := 1; p <= 6; p++ {
			want = append(want, fmt.Sprintf("%s/%d/%s", dt, p, page))
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("stand-in saw %v, want each of %d first pages once", got, len(want))
	}
}

// checkOffsetPages: test_pagination_offset paged through the stand-in's 35
// users 10 at a time and collected all of them in order, which is what its
// validate_results step checks (its verdict is not in the final result).
func checkOffsetPages(t *testing.T, s *e2eStandIn) {
	t.Helper()
	want := []string{"/api/v1/users?limit=10&offset=0", "/api/v1/users?limit=10&offset=10", "/api/v1/users?limit=10&offset=20", "/api/v1/users?limit=10&offset=30"}
	if got := s.requests(); !slices.Equal(got, want) {
		t.Fatalf("the stand-in saw %q, want the four pages %q", got, want)
	}
}

// checkQuantumNotes: quantum_cudaq completes even when its hosts fail, and
// says so in notes; against the stand-in none of its fallbacks may be taken.
func checkQuantumNotes(t *testing.T, ex api.Execution) {
	t.Helper()
	if strings.Contains(string(ex.Result), "unavailable") || strings.Contains(string(ex.Result), "failed") {
		t.Fatalf("quantum_cudaq took a fallback against the stand-in: %s", ex.Result)
	}
}

func checkOffsetUsers(t *testing.T, ex api.Execution) {
	t.Helper()
	var ctx struct {
		Collected []struct{ ID int } `json:"collected_users"`
	}
	if err := json.Unmarshal(ex.Context, &ctx); err != nil || len(ctx.Collected) != 35 || ctx.Collected[0].ID != 1 || ctx.Collected[34].ID != 35 {
		t.Fatalf("ctx.collected_users = %s, want users 1..35 (validate_results expects 35)", ex.Context)
	}
}

// TestNoETLE2ELocal runs every runnable fixture with `millrace run
// --runtime local`, in parallel, credentials from one file.
func TestNoETLE2ELocal(t *testing.T) {
	t.Parallel()
	dir := e2eCorpusDir(t)
	db := newDatabase(t)
	nats, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	creds := map[string]map[string]any{"nats_credential": {"url": nats.URL()}, "service_mesh": {"token": "stand-in-token"}}
	for _, n := range e2ePostgresNames {
		creds[n] = map[string]any{"url": db}
	}
	credFile := writeCredentials(t, creds)
	for _, f := range noetlE2E {
		if f.reason != "" {
			continue
		}
		t.Run(f.name(), func(t *testing.T) {
			t.Parallel()
			s := newE2EStandIn(t)
			args := append([]string{filepath.Join(dir, f.file), "--runtime", "local", "--credentials", credFile}, f.runArgs(s.URL)...)
			ex, code := runJSON(t, args...)
			checkE2ERun(t, f, ex, code)
			if f.standIn != nil {
				f.standIn(t, s)
			}
		})
	}
}

// TestNoETLE2EDistributed runs every runnable fixture with `millrace run
// --runtime distributed` on one server with two workers, in parallel,
// credentials stored through the API.
func TestNoETLE2EDistributed(t *testing.T) {
	t.Parallel()
	dir := e2eCorpusDir(t)
	c := newFlowCluster(t, 2)
	db := newDatabase(t)
	for _, n := range e2ePostgresNames {
		c.putCredential(n, "postgres", map[string]any{"url": db})
	}
	c.putCredential("nats_credential", "nats", map[string]any{"url": c.nats.URL()})
	c.putCredential("service_mesh", "http", map[string]any{"token": "stand-in-token"})
	for _, f := range noetlE2E {
		for _, p := range f.peers {
			c.register(readCorpus(t, dir, p))
		}
	}
	t.Run("fixtures", func(t *testing.T) {
		for _, f := range noetlE2E {
			if f.reason != "" {
				continue
			}
			t.Run(f.name(), func(t *testing.T) {
				t.Parallel()
				s := newE2EStandIn(t)
				args := append([]string{filepath.Join(dir, f.file), "--runtime", "distributed", "--server", c.url}, f.runArgs(s.URL)...)
				ex, code := runJSON(t, args...)
				checkE2ERun(t, f, ex, code)
				if f.standIn != nil {
					f.standIn(t, s)
				}
			})
		}
	})
}

var updateCompat = flag.Bool("update-compat", false, "rewrite docs/compat.md's fixture section from noetlE2E")

// compatSection renders the "Which fixtures run here" section.
func compatSection() string {
	var b strings.Builder
	runs := 0
	for _, f := range noetlE2E {
		if f.reason == "" {
			runs++
		}
	}
	fmt.Fprintf(&b, "## Which fixtures run here\n\n")
	fmt.Fprintf(&b, "Of the %d playbooks in NoETL's end-to-end fixtures (`shared/noetl-e2e`), %d run to completion here in both runtimes, unchanged,\n", len(noetlE2E), runs)
	b.WriteString("against local PostgreSQL, DuckDB, python, the embedded NATS and an HTTP stand-in that the workload points at (`--set api_url=...`);\n")
	b.WriteString("where a fixture checks itself (`test_passed`, `all_passed`, asserts), the check passes.\n")
	b.WriteString("`internal/e2e/noetl_e2e_test.go` runs them (TestNoETLE2ELocal, TestNoETLE2EDistributed) and renders this section from its table.\n\n")
	b.WriteString("| Fixture | Runs here | Why not |\n|---|---|---|\n")
	for _, f := range noetlE2E {
		if f.reason == "" {
			fmt.Fprintf(&b, "| `%s` | yes | |\n", f.file)
		} else {
			fmt.Fprintf(&b, "| `%s` | no | %s |\n", f.file, strings.ReplaceAll(f.reason, "|", `\|`))
		}
	}
	return b.String()
}

// TestNoETLE2ECompatDoc keeps docs/compat.md's fixture section equal to
// the table; -update-compat rewrites it.
func TestNoETLE2ECompatDoc(t *testing.T) {
	t.Parallel()
	const doc = "../../docs/compat.md"
	b, err := os.ReadFile(doc)
	if err != nil && !*updateCompat {
		t.Fatal(err)
	}
	text := string(b)
	const head = "## Which fixtures run here"
	want := compatSection()
	start := strings.Index(text, head)
	end := len(text)
	if start >= 0 {
		if i := strings.Index(text[start+len(head):], "\n## "); i >= 0 {
			end = start + len(head) + i + 1
		}
	}
	var got string
	if start >= 0 {
		got = text[start:end]
	}
	if got == want {
		return
	}
	if !*updateCompat {
		t.Fatalf("docs/compat.md's %q section is not what noetlE2E says; run go test ./internal/e2e -run TestNoETLE2ECompatDoc -update-compat", head)
	}
	if start < 0 {
		if text != "" && !strings.HasSuffix(text, "\n\n") {
			text = strings.TrimRight(text, "\n") + "\n\n"
		}
		text += want
	} else {
		text = text[:start] + want + text[end:]
	}
	if err := os.WriteFile(doc, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
