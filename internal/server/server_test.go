package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/wait"
)

type bundle struct {
	t *testing.T
	*servertest.Harness
	base string
}

// setup starts a server on SQLite in memory and an embedded NATS, with a
// stream name of its own. No workers run: tests act as the worker.
func setup(t *testing.T) *bundle {
	t.Helper()
	h := servertest.Start(t, func(c *config.Server) { c.MaxBodyBytes = 64 << 10 })
	return &bundle{t: t, Harness: h, base: h.Srv.URL()}
}

// raw sends a request and returns status and decoded JSON body.
func (b *bundle) raw(method, path string, body []byte) (int, map[string]any) {
	b.t.Helper()
	req, _ := http.NewRequest(method, b.base+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		b.t.Fatalf("%s %s: response is not JSON: %q", method, path, data)
	}
	return resp.StatusCode, out
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func errMsg(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	m, _ := e["message"].(string)
	return m
}

const oneStep = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: one
  path: t/one
workload:
  greeting: hello
workflow:
  - step: start
    tool:
      kind: noop
      result:
        said: "{{ greeting }}"
`

const twoSteps = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: two
  path: t/two
workflow:
  - step: start
    tool:
      kind: noop
    next:
      arcs:
        - step: second
  - step: second
    tool:
      kind: noop
`

// firstCommand waits for the command of step in execution id and returns
// its event id.
func (b *bundle) firstCommand(id int64, step string) api.Event {
	b.t.Helper()
	var cmd api.Event
	wait.For(b.t, 10*time.Second, func() error {
		evs, err := b.API.Events(b.t.Context(), id)
		if err != nil {
			b.t.Fatal(err)
		}
		for _, e := range evs {
			if e.EventType == api.EvCommandIssued && e.Step == step {
				cmd = e
				return nil
			}
		}
		return fmt.Errorf("no command.issued for step %s", step)
	})
	return cmd
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"malformed json", "POST", "/api/execute", `{"path": `, 400, "bad_json", "malformed JSON"},
		{"unknown field", "POST", "/api/execute", `{"path": "x", "bogus": 1}`, 400, "bad_json", "bogus"},
		{"empty body", "POST", "/api/catalog/register", ``, 400, "bad_json", "empty"},
		{"missing path", "POST", "/api/execute", `{}`, 400, "bad_request", "path is required"},
		{"unknown playbook", "POST", "/api/execute", `{"path": "no/such"}`, 404, "playbook_not_found", "no/such"},
		{"unknown route", "GET", "/api/nope", ``, 404, "not_found", "/api/nope"},
		{"bad execution id", "GET", "/api/executions/abc", ``, 400, "bad_request", "positive integer"},
		{"missing execution", "GET", "/api/executions/12345", ``, 404, "execution_not_found", "12345"},
		{"bad page size", "GET", "/api/executions?page_size=0", ``, 400, "bad_request", "page_size"},
		{"yaml syntax error", "POST", "/api/catalog/register", `{"content": "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: x, path: x}\nworkflow:\n  - step: a\n    tool: [unclosed\n"}`, 422, "invalid_playbook", "playbook.yaml:5: invalid YAML"},
		{"unknown tool kind", "POST", "/api/catalog/register", `{"content": "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: x, path: x}\nworkflow:\n  - step: a\n    tool: {kind: teleport}\n"}`, 422, "invalid_playbook", "teleport"},
		{"unknown key", "POST", "/api/catalog/register", `{"content": "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: x, path: x}\nworkflow:\n  - step: a\n    tool: {kind: noop}\n    nxt: []\n"}`, 422, "invalid_playbook", "playbook.yaml:7:5: unknown key \"nxt\""},
		{"missing command", "POST", "/api/commands/99/claim", `{"worker_id": "w"}`, 404, "command_not_found", "99"},
		{"claim without worker", "POST", "/api/commands/99/claim", `{}`, 400, "bad_request", "worker_id"},
		{"report bad type", "POST", "/api/events", `{"event_type": "playbook.completed", "event_id": 1, "worker_id": "w", "attempt": 1}`, 400, "bad_request", "cannot be reported"},
		{"report no command", "POST", "/api/events", `{"event_type": "command.completed", "worker_id": "w", "attempt": 1}`, 400, "bad_request", "event_id"},
		{"empty batch", "POST", "/api/events/batch", `{"events": []}`, 400, "bad_request", "events"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := b.raw(tc.method, tc.path, []byte(tc.body))
			if status != tc.status || errCode(body) != tc.code || !strings.Contains(errMsg(body), tc.msg) {
				t.Fatalf("got %d %v, want %d %s containing %q", status, body, tc.status, tc.code, tc.msg)
			}
		})
	}
	t.Run("oversized body", func(t *testing.T) {
		big := `{"content": "` + strings.Repeat("x", 100<<10) + `"}`
		status, body := b.raw("POST", "/api/catalog/register", []byte(big))
		if status != 413 || errCode(body) != "payload_too_large" {
			t.Fatalf("got %d %v, want 413 payload_too_large", status, body)
		}
	})
}

func TestRegisterVersionsAndCatalog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for want := 1; want <= 3; want++ {
		r, err := b.API.Register(ctx, oneStep)
		if err != nil {
			t.Fatal(err)
		}
		if r.Path != "t/one" || r.Version != want || r.CatalogID == 0 {
			t.Fatalf("register #%d = %+v", want, r)
		}
	}
	list, err := b.API.Catalog(ctx)
	if err != nil || len(list) != 1 || list[0].Version != 3 {
		t.Fatalf("catalog = %+v, %v; want t/one at version 3", list, err)
	}
	e, err := b.API.CatalogGet(ctx, "t/one", 2)
	if err != nil || e.Version != 2 || e.Content != oneStep {
		t.Fatalf("catalog get v2 = %+v, %v", e, err)
	}
}

// The server is the worker here: claim, start, heartbeat, complete; the
// lease rules and 409s are checked at each step.
func TestClaimLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.API.Register(ctx, twoSteps); err != nil {
		t.Fatal(err)
	}
	st, err := b.API.Execute(ctx, "t/two", 0, nil)
	if err != nil || st.Status != "running" {
		t.Fatalf("execute = %+v, %v", st, err)
	}
	cmd := b.firstCommand(st.ExecutionID, "start")

	cl, err := b.API.Claim(ctx, cmd.EventID, "w1")
	if err != nil || cl.Attempt != 1 || cl.WorkerID != "w1" || cl.Status != "claimed" {
		t.Fatalf("claim = %+v, %v", cl, err)
	}
	if !strings.Contains(string(cl.Tool), `"kind":"noop"`) {
		t.Fatalf("claim returned tool %s, want the rendered noop config", cl.Tool)
	}
	// A second worker is refused while the lease lives.
	if _, err := b.API.Claim(ctx, cmd.EventID, "w2"); client.StatusOf(err) != 409 {
		t.Fatalf("second claim: %v, want 409", err)
	}
	// Only the holder may report.
	if _, err := b.API.Report(ctx, api.Report{EventType: "command.started", EventID: cmd.EventID, WorkerID: "w2", Attempt: 1}); client.StatusOf(err) != 409 {
		t.Fatalf("start by non-holder: %v, want 409", err)
	}
	for _, typ := range []string{"command.started", "command.heartbeat"} {
		if _, err := b.API.Report(ctx, api.Report{EventType: typ, EventID: cmd.EventID, WorkerID: "w1", Attempt: 1}); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	// Release makes it claimable at once, as attempt 2.
	if err := b.API.Release(ctx, cmd.EventID, "w1", 1); err != nil {
		t.Fatal(err)
	}
	cl2, err := b.API.Claim(ctx, cmd.EventID, "w2")
	if err != nil || cl2.Attempt != 2 {
		t.Fatalf("claim after release = %+v, %v; want attempt 2", cl2, err)
	}
	// The old holder's report is stale now.
	if _, err := b.API.Report(ctx, api.Report{EventType: "command.completed", EventID: cmd.EventID, WorkerID: "w1", Attempt: 1}); client.StatusOf(err) != 409 {
		t.Fatalf("stale completion: %v, want 409", err)
	}
	if _, err := b.API.Report(ctx, api.Report{EventType: "command.completed", EventID: cmd.EventID, WorkerID: "w2", Attempt: 2, Result: json.RawMessage(`{"ok":true}`)}); err != nil {
		t.Fatal(err)
	}
	// Finished: claims and repeated completions get 409.
	if _, err := b.API.Claim(ctx, cmd.EventID, "w3"); client.StatusOf(err) != 409 {
		t.Fatalf("claim of a finished command: %v, want 409", err)
	}
	status, body := b.raw("POST", fmt.Sprintf("/api/commands/%d/claim", cmd.EventID), []byte(`{"worker_id":"w3"}`))
	if status != 409 || errCode(body) != "claim_conflict" || !strings.Contains(errMsg(body), "ended") {
		t.Fatalf("raw claim of finished command: %d %v", status, body)
	}
	if _, err := b.API.Report(ctx, api.Report{EventType: "command.completed", EventID: cmd.EventID, WorkerID: "w2", Attempt: 2}); client.StatusOf(err) != 409 {
		t.Fatalf("second completion: %v, want 409", err)
	}

	// The engine issued the next step with the first one's result in scope.
	second := b.firstCommand(st.ExecutionID, "second")
	// Claimed and started in one request, as workers do.
	c2, err := b.API.ClaimAndStart(ctx, second.EventID, "w1", st.ExecutionID)
	if err != nil || c2.Status != "running" || c2.Attempt != 1 {
		t.Fatalf("claim with start = %+v, %v; want running, attempt 1", c2, err)
	}
	if _, err := b.API.ClaimAndStart(ctx, second.EventID, "w2", st.ExecutionID); client.StatusOf(err) != 409 {
		t.Fatalf("second claim with start: %v, want 409", err)
	}
	// Completion through the batch endpoint.
	status, body = b.raw("POST", "/api/events/batch", []byte(fmt.Sprintf(
		`{"events":[{"event_type":"command.completed","command_id":%q,"worker_id":"w1","attempt":%d,"result":{"n":2}},{"event_type":"command.completed","event_id":%d,"worker_id":"w1","attempt":%d,"result":{"n":2}}]}`,
		c2.CommandID, c2.Attempt, second.EventID, c2.Attempt)))
	if status != 200 {
		t.Fatalf("batch: %d %v", status, body)
	}
	results := body["results"].([]any)
	first, dup := results[0].(map[string]any), results[1].(map[string]any)
	if first["error"] != nil && dup["error"] != nil || first["error"] == nil && dup["error"] == nil {
		t.Fatalf("batch of two completions of one command: want exactly one accepted, got %v", results)
	}
	ex, err := b.API.Execution(ctx, st.ExecutionID)
	if err != nil || ex.Status != "completed" || string(ex.Result) != `{"n":2}` || ex.EndedAt == nil {
		t.Fatalf("execution = %+v, %v; want completed with the last step's result", ex, err)
	}
	evs, _ := b.API.Events(ctx, st.ExecutionID)
	var types []string
	for _, e := range evs {
		types = append(types, e.EventType)
	}
	got := strings.Join(types, " ")
	want := "playbook.started command.issued command.claimed command.started command.claimed command.completed step.exit command.issued command.claimed command.started command.completed step.exit playbook.completed"
	if got != want {
		t.Fatalf("event log:\n got  %s\n want %s", got, want)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.API.Register(ctx, oneStep); err != nil {
		t.Fatal(err)
	}
	st, _ := b.API.Execute(ctx, "t/one", 0, nil)
	cmd := b.firstCommand(st.ExecutionID, "start")
	cl, err := b.API.Claim(ctx, cmd.EventID, "w1")
	if err != nil {
		t.Fatal(err)
	}
	ex, err := b.API.Cancel(ctx, st.ExecutionID)
	if err != nil || ex.Status != "cancelled" {
		t.Fatalf("cancel = %+v, %v", ex, err)
	}
	if _, err := b.API.Cancel(ctx, st.ExecutionID); client.StatusOf(err) != 409 {
		t.Fatalf("second cancel: %v, want 409", err)
	}
	// The holder learns through its heartbeat that it should stop.
	if _, err := b.API.Report(ctx, api.Report{EventType: "command.heartbeat", EventID: cmd.EventID, WorkerID: "w1", Attempt: cl.Attempt}); client.StatusOf(err) != 409 {
		t.Fatalf("heartbeat after cancel: %v, want 409", err)
	}
}

func TestPayloadOverridesWorkloadAndNotificationOnTheWire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	sub, err := b.NC.SubscribeSync(b.Cfg.NATS.Subject)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.API.Register(ctx, oneStep); err != nil {
		t.Fatal(err)
	}
	st, err := b.API.Execute(ctx, "t/one", 0, map[string]any{"greeting": "bonjour"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no notification published: %v", err)
	}
	cmd := b.firstCommand(st.ExecutionID, "start")
	want := fmt.Sprintf(`{"execution_id":%d,"event_id":%d,"command_id":"%d:start:%d","step":"start","server_url":%q}`,
		st.ExecutionID, cmd.EventID, st.ExecutionID, cmd.EventID, b.Srv.URL())
	if string(msg.Data) != want {
		t.Fatalf("notification:\n got  %s\n want %s", msg.Data, want)
	}
	if id := msg.Header.Get("Nats-Msg-Id"); id != cmd.CommandID {
		t.Fatalf("Nats-Msg-Id = %q, want the command id %q", id, cmd.CommandID)
	}
	full, err := b.API.Command(ctx, cmd.EventID)
	if err != nil || !strings.Contains(string(full.Tool), `"said":"bonjour"`) {
		t.Fatalf("command tool = %s, %v; want the payload rendered in", full.Tool, err)
	}
}

func TestStreamAndConsumerContract(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	s, err := b.JS.Stream(ctx, b.Cfg.NATS.Stream)
	if err != nil {
		t.Fatal(err)
	}
	si, _ := s.Info(ctx)
	if si.Config.Retention != jetstream.LimitsPolicy || si.Config.Storage != jetstream.MemoryStorage || si.Config.MaxAge != time.Hour {
		t.Fatalf("stream config = retention %s storage %s max_age %s", si.Config.Retention, si.Config.Storage, si.Config.MaxAge)
	}
	subj := strings.Join(si.Config.Subjects, ",")
	if subj != b.Cfg.NATS.Subject+","+b.Cfg.NATS.Subject+".>" {
		t.Fatalf("stream subjects = %s", subj)
	}
	c, err := s.Consumer(ctx, b.Cfg.NATS.Consumer)
	if err != nil {
		t.Fatalf("server did not create the durable consumer: %v", err)
	}
	ci, _ := c.Info(ctx)
	cc := ci.Config
	if cc.Durable != b.Cfg.NATS.Consumer || cc.DeliverPolicy != jetstream.DeliverNewPolicy || cc.AckPolicy != jetstream.AckExplicitPolicy ||
		cc.AckWait != 30*time.Second || cc.MaxDeliver != 1000 || cc.MaxAckPending != 64 {
		t.Fatalf("consumer config = %+v", cc)
	}
}

// The defaults are the seeds' contract.
func TestContractDefaults(t *testing.T) {
	t.Parallel()
	var c config.Server
	config.ServerSet(&c)
	n := c.NATS
	if n.Stream != "NOETL_COMMANDS" || n.Subject != "noetl.commands" || n.Consumer != "noetl_worker_pool" || n.Storage != "memory" ||
		n.MaxAge != time.Hour || n.AckWait != 30*time.Second || n.MaxDeliver != 1000 || n.MaxAckPending != 64 ||
		n.FetchTimeout != 30*time.Second || n.FetchHeartbeat != 5*time.Second || c.Addr != ":8082" {
		t.Fatalf("defaults drifted from the seeds: %+v addr %s", n, c.Addr)
	}
	var w config.Worker
	config.WorkerSet(&w)
	if w.Concurrency != 100 {
		t.Fatalf("worker concurrency default %d, want 100", w.Concurrency)
	}
}

func TestRefusesWorkqueueStream(t *testing.T) {
	t.Parallel()
	emb, err := bus.StartEmbedded(bus.EmbeddedOptions{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, _ := nats.Connect(emb.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "NOETL_COMMANDS", Subjects: []string{"noetl.commands"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	var cfg config.Server
	config.ServerSet(&cfg)
	cfg.NATS.URL, cfg.DatabaseURL, cfg.Addr = emb.URL(), "sqlite::memory:", "127.0.0.1:0"
	_, err = server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "workqueue") || !strings.Contains(err.Error(), "retention=limits") {
		t.Fatalf("server.New with a workqueue stream: %v; want the seeds' error and remedy", err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.raw("GET", "/api/health", nil)
	if status != 200 || body["status"] != "ok" || body["store"] != "ok" || body["nats"] != "ok" {
		t.Fatalf("health = %d %v", status, body)
	}
	resp, err := http.Get(b.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, m := range []string{"millrace_http_request_duration_seconds", "millrace_commands_issued_total", "go_goroutines"} {
		if !strings.Contains(string(data), m) {
			t.Fatalf("/metrics lacks %s", m)
		}
	}
	// Latency is labelled by route pattern and status code.
	if m := `millrace_http_request_duration_seconds_count{code="200",route="GET /api/health"}`; !strings.Contains(string(data), m) {
		t.Fatalf("/metrics lacks %s", m)
	}
	// With NATS gone, health degrades but stays 200 (work is still
	// accepted into the outbox), and says why.
	b.NATS.Shutdown()
	wait.For(t, 10*time.Second, func() error {
		status, body = b.raw("GET", "/api/health", nil)
		if body["status"] != "degraded" {
			return fmt.Errorf("health stayed %d with NATS down", status)
		}
		return nil
	})
	if status != 200 || !strings.Contains(fmt.Sprint(body["nats"]), "outbox") {
		t.Fatalf("degraded health: %d %v; want 200 explaining the outbox", status, body)
	}
}

// The batch endpoints workers use: per-item outcomes with the status the
// single endpoints would have answered, in request order.
func TestBatchClaimAndReport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if _, err := b.API.Register(ctx, twoSteps); err != nil {
		t.Fatal(err)
	}
	var cmds []api.Event
	var items []api.ClaimItem
	for range 3 {
		st, err := b.API.Execute(ctx, "t/two", 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := b.firstCommand(st.ExecutionID, "start")
		cmds = append(cmds, c)
		items = append(items, api.ClaimItem{EventID: c.EventID, ExecutionID: st.ExecutionID})
	}
	if _, err := b.API.Claim(ctx, cmds[1].EventID, "other"); err != nil {
		t.Fatal(err)
	}
	items = append(items, api.ClaimItem{EventID: 1 << 40})
	claims, errs, err := b.API.ClaimBatch(ctx, "w1", true, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{0, 409, 0, 404} {
		if got := client.StatusOf(errs[i]); got != want || (want == 0 && errs[i] != nil) {
			t.Fatalf("item %d: err %v (status %d), want status %d", i, errs[i], got, want)
		}
	}
	if claims[0].Status != "running" || claims[0].WorkerID != "w1" || claims[2].EventID != cmds[2].EventID {
		t.Fatalf("claims = %+v", claims)
	}

	reps := []api.Report{
		{EventType: "command.completed", EventID: cmds[0].EventID, ExecutionID: claims[0].ExecutionID, WorkerID: "w1", Attempt: 1, Result: json.RawMessage(`{"n":1}`)},
		{EventType: "command.completed", EventID: cmds[1].EventID, WorkerID: "w1", Attempt: 1}, // held by "other"
		{EventType: "command.failed", EventID: cmds[2].EventID, WorkerID: "w1", Attempt: 1, Error: &api.ToolError{Kind: "shell", Message: "exit 1"}},
	}
	acks, errs, err := b.API.ReportBatch(ctx, reps)
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[2] != nil || client.StatusOf(errs[1]) != 409 {
		t.Fatalf("report errors = %v", errs)
	}
	if acks[0].Status != "completed" || acks[2].Status != "failed" {
		t.Fatalf("acks = %+v", acks)
	}

	// The whole request is refused when it is malformed.
	for _, body := range []string{`{"commands":[{"event_id":1}]}`, `{"worker_id":"w","commands":[]}`, `{"worker_id":"w","commands":[{"event_id":"x"}]}`} {
		if status, _ := b.raw("POST", "/api/commands/claim", []byte(body)); status != 400 {
			t.Fatalf("claim batch %s: status %d, want 400", body, status)
		}
	}
}
