package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/wait"
)

const long = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: long, path: gw/long}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["sleep 4; echo long-done"]}
`

// NATS restarts while a client streams an execution and another waits for
// one: the stream still delivers every event of the event table exactly
// once and ends, and the wait is answered with the result. Notes are only
// wake-ups; the gateway reads everything back from the server.
func TestStreamAndWaitSurviveNATSRestart(t *testing.T) {
	t.Parallel()
	s := newLiveStack(t, true)
	s.register(long)
	a := s.replica(nil)

	st, err := s.API.Execute(t.Context(), "gw/long", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	type waited struct {
		code int
		ans  answer
		err  error
	}
	waitDone := make(chan waited, 1)
	go func() { // no t.Fatal off the test's goroutine
		var w waited
		resp, err := http.Post(a.URL+"/api/execute?wait=90s", "application/json", strings.NewReader(`{"path": "gw/long"}`))
		if err != nil {
			w.err = err
		} else {
			w.code = resp.StatusCode
			w.err = json.NewDecoder(resp.Body).Decode(&w.ans)
			resp.Body.Close()
		}
		waitDone <- w
	}()

	c, resp := openSSE(t, fmt.Sprintf("%s/api/executions/%d/stream", a.URL, st.ExecutionID), nil)
	if c == nil {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	var got []int64
	for {
		f, ok := c.next(t, 30*time.Second)
		if !ok || f.Event == "end" {
			t.Fatalf("the stream ended before the command started: %+v", f)
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.EventID)
		if ev.EventType == api.EvCommandStarted {
			break
		}
	}
	// Both commands run on the worker (which reports over HTTP) before
	// NATS goes away.
	wait.For(t, 30*time.Second, func() error {
		keys, err := a.g.requests.Keys(t.Context())
		if err != nil || len(keys) != 1 {
			return fmt.Errorf("requests: %v %v", keys, err)
		}
		rq, _, _, err := a.g.getRequest(t.Context(), keys[0])
		if err != nil || rq.ExecutionID == 0 {
			return fmt.Errorf("request %+v: %v", rq, err)
		}
		evs, err := s.API.Events(t.Context(), rq.ExecutionID)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.EventType == api.EvCommandStarted {
				return nil
			}
		}
		return fmt.Errorf("execution %d has not started its command", rq.ExecutionID)
	})
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}

	for {
		f, ok := c.next(t, 60*time.Second)
		if !ok {
			t.Fatal("the stream closed without the end frame")
		}
		if f.Event == "end" {
			break
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.EventID)
	}
	evs, err := s.API.Events(t.Context(), st.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int64, len(evs))
	for i, e := range evs {
		want[i] = e.EventID
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events across the NATS restart differ from the event table:\n got %v\nwant %v", got, want)
	}

	select {
	case w := <-waitDone:
		if w.err != nil || w.code != http.StatusOK || w.ans.Status != "completed" {
			t.Fatalf("the wait across the NATS restart: %d %+v %v", w.code, w.ans, w.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the wait was not answered within 60s of the restart")
	}
}
