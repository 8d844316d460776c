package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
)

const steps = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: steps, path: gw/steps}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["sleep 1; echo one"]}
    next: {arcs: [{step: two}]}
  - step: two
    tool: {kind: shell, cmds: ["sleep 1; echo two"]}
    next: {arcs: [{step: three}]}
  - step: three
    tool: {kind: shell, cmds: ["sleep 1; echo three"]}
    next: {arcs: [{step: four}]}
  - step: four
    tool: {kind: shell, cmds: ["sleep 1; echo four"]}
    next: {arcs: [{step: five}]}
  - step: five
    tool: {kind: shell, cmds: ["sleep 1; echo five"]}
`

// eventIDs collects the event ids of a stream's event frames (from the
// data, so that a frame sent without an id line counts too) until the end
// frame or the stream's end.
func eventIDs(t *testing.T, c *sseClient, stopAfter int) (ids []int64, lastID string, ended bool) {
	t.Helper()
	for {
		f, ok := c.next(t, 60*time.Second)
		if !ok {
			return ids, lastID, false
		}
		if f.Event == "end" {
			return ids, lastID, true
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(f.Data), &ev); err != nil || ev.EventID == 0 {
			t.Fatalf("frame %+v is not an event: %v", f, err)
		}
		if f.Event != ev.EventType {
			t.Fatalf("frame event %q carries a %q event", f.Event, ev.EventType)
		}
		ids = append(ids, ev.EventID)
		if f.ID != "" {
			lastID = f.ID
		}
		if stopAfter > 0 && len(ids) >= stopAfter {
			return ids, lastID, false
		}
	}
}

// A client watching an execution through replica A loses A mid-run, and
// reconnects with Last-Event-ID to a new replica B: between the two
// connections it gets every event of the execution's event table exactly
// once, in order.
func TestStreamResumesAfterGatewayRestart(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, true)
	s.register(steps)
	a := s.replica(nil)
	st, err := s.API.Execute(t.Context(), "gw/steps", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/api/executions/%d/stream", st.ExecutionID)

	c1, resp := openSSE(t, a.URL+path, nil)
	if c1 == nil {
		t.Fatalf("stream on A: %d", resp.StatusCode)
	}
	first, lastID, ended := eventIDs(t, c1, 3)
	if ended || lastID == "" {
		t.Fatalf("the execution ended within its first 3 events (%v): make the playbook slower", first)
	}
	t0 := time.Now()
	a.stop()
	t.Logf("A stopped in %s after %d events", time.Since(t0), len(first))
	// Whatever A sent before it went away counts (the client saw it).
	rest, last2, _ := eventIDs(t, c1, 0)
	first = append(first, rest...)
	if last2 != "" {
		lastID = last2
	}
	if ex, _ := s.API.Execution(t.Context(), st.ExecutionID); ex.Status.Terminal() {
		t.Fatalf("the execution ended while A ran (%d events): the restart must come mid-run", len(first))
	}

	b := s.replica(nil)
	c2, resp := openSSE(t, b.URL+path, http.Header{"Last-Event-Id": {lastID}})
	if c2 == nil {
		t.Fatalf("stream on B: %d", resp.StatusCode)
	}
	second, _, ended := eventIDs(t, c2, 0)
	if !ended {
		t.Fatal("the stream on B closed without the end frame")
	}

	evs, err := s.API.Events(t.Context(), st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	got := append(append([]int64{}, first...), second...)
	want := make([]int64, len(evs))
	for i, e := range evs {
		want[i] = e.EventID
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events across the restart differ from the event table:\n got %v (A %d, B %d)\nwant %v", got, len(first), len(second), want)
	}
	if evs[len(evs)-1].EventType != api.EvPlaybookCompleted {
		t.Fatalf("last event %s", evs[len(evs)-1].EventType)
	}
}

// A stream of an execution that does not exist is a 404 JSON error, not an
// empty stream.
func TestStreamUnknownExecution(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, false)
	a := s.replica(nil)
	for _, id := range []string{"987654321", "nope"} {
		c, resp := openSSE(t, a.URL+"/api/executions/"+id+"/stream", nil)
		if c != nil {
			t.Fatalf("%s: got a stream", id)
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s: status %d", id, resp.StatusCode)
		}
		if code := errorCode(t, resp); code != "execution_not_found" {
			t.Fatalf("%s: code %s", id, code)
		}
	}
	c, resp := openSSE(t, a.URL+"/events?execution_id=987654321", nil)
	if c != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/events for an unknown execution: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

type rpcIn struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

func rpcOf(t *testing.T, f sseFrame) rpcIn {
	t.Helper()
	var in rpcIn
	if err := json.Unmarshal([]byte(f.Data), &in); err != nil || in.JSONRPC != "2.0" || in.Method != f.Event {
		t.Fatalf("frame %+v is not a JSON-RPC 2.0 notification named by its event: %v", f, err)
	}
	return in
}

// /events: init with the client id and capabilities, pings at the
// heartbeat, playbook/state for a watched execution's notes and for the
// server's notes of this client's requests,
// playbook/progress for a progress callback, playbook/result when a
// request of this client ends, and the result again for a client that
// reconnects with its client id.
func TestEventsFrames(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, true)
	s.register(plain, sleepy)
	a := s.replica(func(c *config.Gateway) { c.Heartbeat = 300 * time.Millisecond })
	clientID := "c-" + strings.ReplaceAll(newUUID(), "-", "")[:12]

	watched, err := s.API.Execute(t.Context(), "gw/sleepy", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev, resp := openSSE(t, fmt.Sprintf("%s/events?client_id=%s&execution_id=%d", a.URL, clientID, watched.ExecutionID), nil)
	if ev == nil {
		t.Fatalf("/events: %d", resp.StatusCode)
	}
	f, _ := ev.next(t, 10*time.Second)
	if f.Event != "init" {
		t.Fatalf("first frame %+v", f)
	}
	var init struct {
		ProtocolVersion string `json:"protocolVersion"`
		ServerInfo      struct{ Name, Version string }
		ClientID        string `json:"clientId"`
		Capabilities    map[string]any
		PendingRequests []rpcPending `json:"pendingRequests"`
	}
	if err := json.Unmarshal(rpcOf(t, f).Params, &init); err != nil {
		t.Fatal(err)
	}
	if init.ProtocolVersion != "2024-11-05" || init.ServerInfo.Name != "millrace-gateway" || init.ClientID != clientID || init.PendingRequests == nil || len(init.PendingRequests) != 0 || init.Capabilities == nil {
		t.Fatalf("init: %s", f.Data)
	}

	// The open stream shows in the gateway's metrics.
	mresp, err := http.Get(a.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `millrace_gateway_live_open{route="GET /events"} 1`) {
		t.Fatalf("/metrics does not count the open /events stream:\n%s", metrics)
	}

	// A lifecycle note of the watched execution, as the server publishes it.
	note, _ := json.Marshal(api.LiveNote{ExecutionID: watched.ExecutionID, EventID: 1, EventType: api.EvStepExit, Step: "start", Status: "completed", At: time.Now().UTC()})
	if err := s.NC.Publish(s.gw.UpdatesPrefix+fmt.Sprint(watched.ExecutionID), note); err != nil {
		t.Fatal(err)
	}

	var slow, done answer
	if code := post(t, a.URL+"/api/execute", map[string]any{"path": "gw/sleepy", "client_id": clientID}, &slow); code != http.StatusAccepted || slow.RequestID == "" {
		t.Fatalf("async execute: %d %+v", code, slow)
	}
	if code := post(t, a.URL+"/api/execute", map[string]any{"path": "gw/plain", "client_id": clientID}, &done); code != http.StatusAccepted || done.RequestID == "" {
		t.Fatalf("async execute: %d %+v", code, done)
	}

	var pings, states, progresses, serverStates int
	var result rpcResult
	deadline := time.Now().Add(60 * time.Second)
	lastProgress := time.Time{}
	for result.RequestID == "" || pings == 0 || states == 0 || progresses == 0 || serverStates == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("within 60s: pings %d, states %d (from the server %d), progress %d, result %+v", pings, states, serverStates, progresses, result)
		}
		// The connection listens for a request's progress once the bucket
		// told it of the request: send until a frame shows it arrived.
		if progresses == 0 && time.Since(lastProgress) > 300*time.Millisecond {
			lastProgress = time.Now()
			var ack map[string]any
			if code := post(t, a.URL+"/api/internal/callback", map[string]any{"request_id": slow.RequestID, "status": "progress", "step": "start", "message": "half way", "progress": 0.5}, &ack); code != http.StatusOK {
				t.Fatalf("progress callback: %d %v", code, ack)
			}
		}
		f, ok := ev.next(t, 10*time.Second)
		if !ok {
			t.Fatal("/events closed")
		}
		in := rpcOf(t, f)
		switch f.Event {
		case "ping":
			pings++
		case "playbook/state":
			var st rpcState
			_ = json.Unmarshal(in.Params, &st)
			if st.ExecutionID == watched.ExecutionID && st.EventType == api.EvStepExit && st.StepName == "start" && st.Status == "completed" {
				states++
			}
			// The server's own note for a request of this client.
			if st.ExecutionID == slow.ExecutionID && st.EventType == api.EvPlaybookCompleted && st.Status == "completed" && !st.At.IsZero() {
				serverStates++
			}
		case "playbook/progress":
			var p rpcProgress
			_ = json.Unmarshal(in.Params, &p)
			if p.RequestID != slow.RequestID || p.ExecutionID != slow.ExecutionID || p.Message != "half way" || p.Progress == nil || *p.Progress != 0.5 {
				t.Fatalf("progress frame: %s", f.Data)
			}
			progresses++
		case "playbook/result":
			var r rpcResult
			_ = json.Unmarshal(in.Params, &r)
			if r.RequestID == done.RequestID {
				result = r
			}
		}
	}
	if result.ExecutionID != done.ExecutionID || result.Status != "completed" || result.Error != nil || !strings.Contains(string(result.Data), "plain-done") {
		t.Fatalf("result frame: %+v data %s", result, result.Data)
	}
	ev.close()

	// Reconnect with the client id: the finished result is replayed, the
	// request still running is pending.
	ev2, resp := openSSE(t, fmt.Sprintf("%s/events?client_id=%s", a.URL, clientID), nil)
	if ev2 == nil {
		t.Fatalf("/events again: %d", resp.StatusCode)
	}
	f, _ = ev2.next(t, 10*time.Second)
	if err := json.Unmarshal(rpcOf(t, f).Params, &init); err != nil {
		t.Fatal(err)
	}
	f, _ = ev2.next(t, 10*time.Second)
	var replay rpcResult
	_ = json.Unmarshal(rpcOf(t, f).Params, &replay)
	if f.Event != "playbook/result" || replay.RequestID != done.RequestID {
		// The sleepy one may have ended meanwhile and come first.
		f, _ = ev2.next(t, 10*time.Second)
		_ = json.Unmarshal(rpcOf(t, f).Params, &replay)
	}
	if f.Event != "playbook/result" || replay.RequestID != done.RequestID || replay.Status != "completed" {
		t.Fatalf("replayed result: %+v (init %s)", f, f.Data)
	}
	for _, p := range init.PendingRequests {
		if p.RequestID == done.RequestID {
			t.Fatalf("a finished request is pending: %+v", init.PendingRequests)
		}
	}
}
