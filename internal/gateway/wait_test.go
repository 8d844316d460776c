package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
)

// callsBack posts its own result to callback_url (replica B in the test)
// with the request id the gateway put in its workload, then sleeps, so the
// execution is still running when the answer arrives.
const callsBack = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: calls_back, path: gw/calls_back}
workload:
  callback_url: http://127.0.0.1:1
  request_id: ""
  gateway_url: ""
workflow:
  - step: start
    tool:
      kind: http
      method: POST
      url: "{{ callback_url }}"
      json:
        request_id: "{{ request_id }}"
        execution_id: "{{ execution_id }}"
        status: COMPLETED
        data: {answered_by: "B", n: 42}
    next:
      arcs: [{step: linger}]
  - step: linger
    tool: {kind: shell, cmds: ["sleep 1; echo lingered"]}
`

const plain = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: plain, path: gw/plain}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["echo plain-done"]}
`

const failing = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: failing, path: gw/failing}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["echo broken >&2; exit 3"]}
`

const sleepy = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sleepy, path: gw/sleepy}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["sleep 2; echo woke"]}
`

func (s *liveStack) register(playbooks ...string) {
	s.t.Helper()
	for _, p := range playbooks {
		if _, err := s.API.Register(s.t.Context(), p); err != nil {
			s.t.Fatal(err)
		}
	}
}

// Execute-and-wait through replica A while the playbook's callback reaches
// replica B: B records it and fans it out on the callback subject, and A
// answers with B's data before the execution has even ended.
func TestExecuteAndWaitAnsweredByCallbackOnOtherReplica(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, true)
	s.register(callsBack)
	a, b := s.replica(nil), s.replica(nil)

	var ans answer
	code := post(t, a.URL+"/api/execute?wait=60s", map[string]any{
		"path":    "gw/calls_back",
		"payload": map[string]any{"callback_url": b.URL + "/api/internal/callback"},
	}, &ans)
	if code != http.StatusOK {
		t.Fatalf("execute-and-wait: %d %+v", code, ans)
	}
	if ans.Status != "completed" || ans.ExecutionID == 0 || ans.RequestID == "" {
		t.Fatalf("answer: %+v", ans)
	}
	var data map[string]any
	if err := json.Unmarshal(ans.Result, &data); err != nil || data["answered_by"] != "B" || data["n"] != float64(42) {
		t.Fatalf("the answer is not B's callback data: %s (%v)", ans.Result, err)
	}
	// The answer came from the callback, not from the execution's end.
	ex, err := s.API.Execution(t.Context(), ans.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != api.ExecRunning {
		t.Fatalf("execution %d is %s: the answer should have come before its end", ex.ExecutionID, ex.Status)
	}
	// The record in the shared bucket says the same, on either replica.
	rq, _, ok, err := b.g.getRequest(t.Context(), ans.RequestID)
	if err != nil || !ok || !rq.Done || rq.ExecutionID != ans.ExecutionID || rq.Playbook != "gw/calls_back" {
		t.Fatalf("request record: %+v ok=%v err=%v", rq, ok, err)
	}
}

// A playbook that never calls back is answered by its own end: the result
// (or error) the server recorded, read back after the terminal note.
func TestExecuteAndWaitAnsweredByCompletion(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, true)
	s.register(plain, failing, sleepy)
	a := s.replica(nil)

	var ok answer
	if code := post(t, a.URL+"/api/execute?wait=60s", map[string]any{"path": "gw/plain"}, &ok); code != http.StatusOK {
		t.Fatalf("plain: %d %+v", code, ok)
	}
	ex, err := s.API.Execution(t.Context(), ok.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	if ok.Status != "completed" || ex.Status != api.ExecCompleted || string(ok.Result) != string(ex.Result) || !strings.Contains(string(ok.Result), "plain-done") {
		t.Fatalf("answer %+v (result %s), execution %s %s", ok, ok.Result, ex.Status, ex.Result)
	}

	var bad answer
	if code := post(t, a.URL+"/api/execute", map[string]any{"path": "gw/failing", "wait_seconds": 60}, &bad); code != http.StatusOK {
		t.Fatalf("failing: %d %+v", code, bad)
	}
	if bad.Status != "failed" || bad.Error == "" || len(bad.Result) != 0 {
		t.Fatalf("a failed execution's answer: %+v", bad)
	}

	// The wait runs out first: 202, still running, with the ids to follow.
	var slow answer
	if code := post(t, a.URL+"/api/execute?wait=200ms", map[string]any{"path": "gw/sleepy"}, &slow); code != http.StatusAccepted {
		t.Fatalf("sleepy: %d %+v", code, slow)
	}
	if slow.Status != "running" || slow.ExecutionID == 0 || slow.RequestID == "" {
		t.Fatalf("timed-out answer: %+v", slow)
	}

	// Errors: no path; the server's own error passes through.
	var env struct{ Error struct{ Code string } }
	if code := post(t, a.URL+"/api/execute?wait=1s", map[string]any{"payload": map[string]any{}}, &env); code != http.StatusBadRequest || env.Error.Code != "bad_request" {
		t.Fatalf("no path: %d %+v", code, env)
	}
	if code := post(t, a.URL+"/api/execute?wait=1s", map[string]any{"path": "gw/nope"}, &env); code != http.StatusNotFound || env.Error.Code != "playbook_not_found" {
		t.Fatalf("unknown playbook: %d %+v", code, env)
	}
	if code := post(t, a.URL+"/api/execute?wait=soon", map[string]any{"path": "gw/plain"}, &env); code != http.StatusBadRequest {
		t.Fatalf("bad wait: %d %+v", code, env)
	}
}

// Callbacks: unknown or malformed request ids are 404, an oversized body
// 413, bad JSON 400 — all as the JSON error envelope.
func TestCallbackRefusals(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, false)
	a := s.replica(nil)
	url := a.URL + "/api/internal/callback"
	var env struct {
		Error struct{ Code, Message string }
	}

	if code := post(t, url, map[string]any{"request_id": newUUID(), "status": "COMPLETED", "data": 1}, &env); code != http.StatusNotFound || env.Error.Code != "request_not_found" {
		t.Fatalf("unknown request: %d %+v", code, env)
	}
	if code := post(t, url, map[string]any{"request_id": "x.>", "status": "COMPLETED"}, &env); code != http.StatusNotFound || env.Error.Code != "request_not_found" {
		t.Fatalf("malformed request id: %d %+v", code, env)
	}
	big := `{"request_id":"` + newUUID() + `","status":"COMPLETED","data":"` + strings.Repeat("x", MaxCallbackBytes) + `"}`
	if code := post(t, url, big, &env); code != http.StatusRequestEntityTooLarge || env.Error.Code != "payload_too_large" {
		t.Fatalf("oversized callback: %d %+v", code, env)
	}
	if code := post(t, url, `{"request_id": `, &env); code != http.StatusBadRequest || env.Error.Code != "bad_json" {
		t.Fatalf("bad JSON: %d %+v", code, env)
	}
	if code := post(t, url, `{"status": "COMPLETED"}`, &env); code != http.StatusBadRequest || env.Error.Code != "bad_request" {
		t.Fatalf("no request id: %d %+v", code, env)
	}
}
