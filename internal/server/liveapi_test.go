package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/client"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/live"
	"github.com/millrace/millrace/internal/live/livetest"
	"github.com/millrace/millrace/internal/server"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/wait"
)

const threeSteps = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: three
  path: t/three
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
    next:
      arcs:
        - step: third
  - step: third
    tool:
      kind: noop
`

// runStep acts as the worker for step: claim, start and complete.
func (b *bundle) runStep(execID int64, step string) {
	b.t.Helper()
	cmd := b.firstCommand(execID, step)
	cl, err := b.API.ClaimAndStart(b.t.Context(), cmd.EventID, "w-"+step, execID)
	if err != nil {
		b.t.Fatalf("claim %s: %v", step, err)
	}
	if _, err := b.API.Report(b.t.Context(), api.Report{EventType: api.EvCommandCompleted, EventID: cmd.EventID, WorkerID: cl.WorkerID,
		Attempt: cl.Attempt, Result: json.RawMessage(`{"step":"` + step + `"}`)}); err != nil {
		b.t.Fatalf("complete %s: %v", step, err)
	}
}

func (b *bundle) startThree() int64 {
	b.t.Helper()
	if _, err := b.API.Register(b.t.Context(), threeSteps); err != nil {
		b.t.Fatal(err)
	}
	st, err := b.API.Execute(b.t.Context(), "t/three", 0, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return st.ExecutionID
}

func ids(evs []api.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}

// An execution's stream carries every event of the event table exactly
// once, in order; a client that reconnects with Last-Event-ID mid-way gets
// the rest exactly once.
func TestExecutionStreamMatchesTheEventTable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.startThree()
	url := fmt.Sprintf("%s/api/executions/%d/stream", b.base, id)
	whole := livetest.Open(t, url, nil) // stays connected throughout
	part := livetest.Open(t, url, nil)  // hangs up after the first step

	b.runStep(id, "start")
	// Read the first connection up to the first step's completion.
	var before []api.Event
	for {
		f, ok := part.Next(t)
		if !ok {
			t.Fatal("stream ended early")
		}
		ev := livetest.Event(t, f)
		before = append(before, ev)
		if ev.EventType == api.EvCommandCompleted {
			break
		}
	}
	part.Close()
	b.runStep(id, "second")
	b.runStep(id, "third")
	last := before[len(before)-1].EventID
	rest, ended := livetest.Open(t, url, map[string]string{"Last-Event-ID": strconv.FormatInt(last, 10)}).Events(t)
	if !ended {
		t.Fatal("resumed stream: no end frame")
	}
	all, ended := whole.Events(t)
	if !ended {
		t.Fatal("stream: no end frame")
	}

	table, err := b.API.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ids(all)), fmt.Sprint(ids(table)); got != want {
		t.Fatalf("stream sent %d events %s\nevent table has %d %s", len(all), got, len(table), want)
	}
	if got, want := fmt.Sprint(ids(append(before, rest...))), fmt.Sprint(ids(table)); got != want {
		t.Fatalf("first connection + resumed one sent %s\nevent table has %s", got, want)
	}
	if table[len(table)-1].EventType != api.EvPlaybookCompleted {
		t.Fatalf("last event %s, want playbook.completed", table[len(table)-1].EventType)
	}
	// The frames carry the whole event, results included.
	for _, e := range all {
		if e.EventType == api.EvCommandCompleted && !strings.Contains(string(e.Result), `"step"`) {
			t.Fatalf("command.completed without its result: %+v", e)
		}
	}
	// An ended execution's stream sends what is left and ends at once.
	evs, ended := livetest.Open(t, url+"?after="+strconv.FormatInt(table[len(table)-2].EventID, 10), nil).Events(t)
	if !ended || len(evs) != 1 || evs[0].EventID != table[len(table)-1].EventID {
		t.Fatalf("stream of an ended execution after its second-last event: %v (ended %v), want only the last", ids(evs), ended)
	}
}

// The server publishes a note per lifecycle event on core NATS
// <prefix><execution_id>, after the commit: when it arrives, the event is
// already in the event table.
func TestLiveNotesArriveOnNATSAfterCommit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	prefix := b.Cfg.UpdatesPrefix
	var mu sync.Mutex
	var notes []api.LiveNote
	var problems []string
	sub, err := b.NC.Subscribe(prefix+">", func(m *nats.Msg) {
		var n api.LiveNote
		if err := json.Unmarshal(m.Data, &n); err != nil {
			mu.Lock()
			problems = append(problems, fmt.Sprintf("note %q: %v", m.Data, err))
			mu.Unlock()
			return
		}
		// Committed before published: the event table has it now.
		evs, err := b.API.Events(t.Context(), n.ExecutionID)
		found := false
		for _, e := range evs {
			found = found || e.EventID == n.EventID && e.EventType == n.EventType
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil || !found {
			problems = append(problems, fmt.Sprintf("note for event %d (%s) arrived before the event was readable (%v)", n.EventID, n.EventType, err))
		}
		if m.Subject != live.Subject(prefix, n.ExecutionID) {
			problems = append(problems, fmt.Sprintf("note of execution %d on subject %s", n.ExecutionID, m.Subject))
		}
		notes = append(notes, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := b.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	id := b.startThree()
	for _, step := range []string{"start", "second", "third"} {
		b.runStep(id, step)
	}
	table, err := b.API.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, e := range table {
		if live.Lifecycle(e.EventType) {
			want = append(want, e.EventID)
		}
	}
	wait.For(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(notes) < len(want) {
			return fmt.Errorf("%d notes of %d", len(notes), len(want))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "\n"))
	}
	got := map[int64]int{}
	for _, n := range notes {
		got[n.EventID]++
		if n.ExecutionID != id || n.At.IsZero() {
			t.Errorf("note %+v", n)
		}
	}
	for _, w := range want {
		if got[w] != 1 {
			t.Errorf("event %d: %d notes, want 1", w, got[w])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d notes for %d lifecycle events", len(got), len(want))
	}
	if last := notes[len(notes)-1]; last.EventType != api.EvPlaybookCompleted || last.Status != string(api.ExecCompleted) {
		t.Errorf("last note %+v, want playbook.completed with status completed", last)
	}
}

func TestExecutionStreamBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, c := range []struct {
		path, lastID string
		status       int
		code         string
	}{
		{"/api/executions/424242/stream", "", 404, "execution_not_found"},
		{"/api/executions/x/stream", "", 400, "bad_request"},
		{"/api/executions/424242/stream", "not-an-id", 400, "bad_request"},
		{"/api/stream?after=-1", "", 400, "bad_request"},
	} {
		h := map[string]string{}
		if c.lastID != "" {
			h["Last-Event-ID"] = c.lastID
		}
		conn := livetest.Open(t, b.base+c.path, h)
		body, _ := io.ReadAll(conn.Resp.Body)
		if conn.Resp.StatusCode != c.status || !strings.HasPrefix(conn.Resp.Header.Get("Content-Type"), "application/json") ||
			!strings.Contains(string(body), `"`+c.code+`"`) {
			t.Errorf("%s (Last-Event-ID %q): %d %s %s; want %d JSON %s", c.path, c.lastID, conn.Resp.StatusCode, conn.Resp.Header.Get("Content-Type"), body, c.status, c.code)
		}
	}
}

func TestEventsAfterAndLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.startThree()
	b.runStep(id, "start")
	table, err := b.API.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	get := func(query string) []api.Event {
		resp, err := http.Get(fmt.Sprintf("%s/api/executions/%d/events?%s", b.base, id, query))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list api.EventList
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&list) != nil {
			t.Fatalf("events?%s: status %d", query, resp.StatusCode)
		}
		return list.Events
	}
	if got := get(fmt.Sprintf("after=%d", table[1].EventID)); fmt.Sprint(ids(got)) != fmt.Sprint(ids(table[2:])) {
		t.Fatalf("after the 2nd: %v, want %v", ids(got), ids(table[2:]))
	}
	if got := get(fmt.Sprintf("after=%d&limit=2", table[0].EventID)); fmt.Sprint(ids(got)) != fmt.Sprint(ids(table[1:3])) {
		t.Fatalf("after the 1st, limit 2: %v, want %v", ids(got), ids(table[1:3]))
	}
	if got := get("limit=1"); len(got) != 1 || got[0].EventID != table[0].EventID {
		t.Fatalf("limit 1: %v", ids(got))
	}
	status, body := b.raw("GET", fmt.Sprintf("/api/executions/%d/events?after=x", id), nil)
	if status != 400 || errCode(body) != "bad_request" {
		t.Fatalf("after=x: %d %v", status, body)
	}
}

// The global feed carries every execution's start and end.
func TestFeedCarriesStartsAndEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	feed := livetest.Open(t, b.base+"/api/stream", nil)
	id := b.startThree()
	for _, step := range []string{"start", "second", "third"} {
		b.runStep(id, step)
	}
	var types []string
	for len(types) < 2 {
		f, ok := feed.Next(t)
		if !ok {
			t.Fatal("feed ended")
		}
		ev := livetest.Event(t, f)
		if ev.ExecutionID != id {
			t.Fatalf("feed event of execution %d, want %d", ev.ExecutionID, id)
		}
		types = append(types, ev.EventType)
	}
	if strings.Join(types, " ") != "playbook.started playbook.completed" {
		t.Fatalf("feed: %v", types)
	}
}

// A stopping server ends its live streams (clients resume elsewhere with
// Last-Event-ID) instead of waiting out the shutdown grace for them.
func TestShutdownEndsLiveStreams(t *testing.T) {
	t.Parallel()
	cfg := servertest.Config(t)
	var logs syncBuffer
	srv, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := client.New(srv.URL())
	wait.For(t, 10*time.Second, func() error { _, err := c.Health(t.Context()); return err })
	if _, err := c.Register(t.Context(), threeSteps); err != nil {
		t.Fatal(err)
	}
	st, err := c.Execute(t.Context(), "t/three", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	stream := livetest.Open(t, fmt.Sprintf("%s/api/executions/%d/stream", srv.URL(), st.ExecutionID), nil)
	feed := livetest.Open(t, srv.URL()+"/api/stream", nil)
	if f, ok := stream.Next(t); !ok || f.Event != api.EvPlaybookStarted {
		t.Fatalf("first frame %+v", f)
	}
	cancel()
	for _, conn := range []*livetest.Conn{stream, feed} {
		for {
			if _, ok := conn.NextRaw(t); !ok {
				break
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred stop
	if strings.Contains(logs.String(), "still running at the end of the shutdown grace") {
		t.Fatalf("shutdown waited for the streams:\n%s", logs.String())
	}
}

// Two servers share a PostgreSQL database and NATS: a client streaming
// from one sees, woken by the other's notes (the poll is an hour here),
// every event the other one commits, once, in order; the global feed too.
func TestStreamSeesAnotherServersCommits(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewSchema(t)
	slow := func(c *config.Server) { c.DatabaseURL = dbURL; c.LivePoll = time.Hour }
	a := servertest.Start(t, slow)
	other := servertest.Start(t, func(c *config.Server) {
		slow(c)
		c.NATS, c.UpdatesPrefix = a.Cfg.NATS, a.Cfg.UpdatesPrefix
	})
	b := &bundle{t: t, Harness: other, base: other.Srv.URL()}
	feed := livetest.Open(t, a.Srv.URL()+"/api/stream", nil)
	id := b.startThree()
	stream := livetest.Open(t, fmt.Sprintf("%s/api/executions/%d/stream", a.Srv.URL(), id), nil)
	for _, step := range []string{"start", "second", "third"} {
		b.runStep(id, step)
	}
	got, ended := stream.Events(t)
	if !ended {
		t.Fatal("no end frame")
	}
	table, err := b.API.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(got)) != fmt.Sprint(ids(table)) {
		t.Fatalf("stream on the first server sent %v\nevent table %v", ids(got), ids(table))
	}
	var types []string
	for len(types) < 2 {
		f, ok := feed.Next(t)
		if !ok {
			t.Fatal("feed ended")
		}
		types = append(types, livetest.Event(t, f).EventType)
	}
	if strings.Join(types, " ") != "playbook.started playbook.completed" {
		t.Fatalf("feed on the first server: %v", types)
	}
}

const fanOut = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: fan
  path: t/fan
workflow:
  - step: start
    tool:
      kind: noop
    next:
      spec: {mode: inclusive}
      arcs:
        - step: b1
        - step: b2
        - step: b3
        - step: b4
        - step: b5
        - step: b6
        - step: b7
        - step: b8
  - step: b1
    tool: {kind: noop}
  - step: b2
    tool: {kind: noop}
  - step: b3
    tool: {kind: noop}
  - step: b4
    tool: {kind: noop}
  - step: b5
    tool: {kind: noop}
  - step: b6
    tool: {kind: noop}
  - step: b7
    tool: {kind: noop}
  - step: b8
    tool: {kind: noop}
`

// On PostgreSQL (several committers), branches claimed and completed at
// once without an execution hint commit through different committers, so
// events can commit out of id order: the stream still sends each event of
// the table exactly once, and its id lines only grow.
func TestStreamUnderConcurrentCommits(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewSchema(t)
	h := servertest.Start(t, func(c *config.Server) { c.DatabaseURL = dbURL })
	b := &bundle{t: t, Harness: h, base: h.Srv.URL()}
	ctx := t.Context()
	if _, err := b.API.Register(ctx, fanOut); err != nil {
		t.Fatal(err)
	}
	st, err := b.API.Execute(ctx, "t/fan", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := st.ExecutionID
	var frames []livetest.Frame
	var got []api.Event
	stream := livetest.Open(t, fmt.Sprintf("%s/api/executions/%d/stream", b.base, id), nil)
	b.runStep(id, "start")
	var cmds []api.Event
	wait.For(t, 10*time.Second, func() error {
		evs, err := b.API.Events(ctx, id)
		if err != nil {
			return err
		}
		cmds = cmds[:0]
		for _, e := range evs {
			if e.EventType == api.EvCommandIssued && strings.HasPrefix(e.Step, "b") {
				cmds = append(cmds, e)
			}
		}
		if len(cmds) < 8 {
			return fmt.Errorf("%d branch commands issued", len(cmds))
		}
		return nil
	})
	var wg sync.WaitGroup
	for _, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := b.API.ClaimAndStart(ctx, c.EventID, "w-"+c.Step, 0) // no hint: any committer
			if err != nil {
				t.Errorf("claim %s: %v", c.Step, err)
				return
			}
			if _, err := b.API.Report(ctx, api.Report{EventType: api.EvCommandCompleted, EventID: c.EventID, WorkerID: cl.WorkerID, Attempt: cl.Attempt}); err != nil {
				t.Errorf("complete %s: %v", c.Step, err)
			}
		}()
	}
	wg.Wait()
	for {
		f, ok := stream.Next(t)
		if !ok {
			t.Fatal("stream ended without an end frame")
		}
		if f.Event == "end" {
			break
		}
		frames = append(frames, f)
		got = append(got, livetest.Event(t, f))
	}
	table, err := b.API.Events(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]int{}
	for _, e := range got {
		seen[e.EventID]++
	}
	for _, e := range table {
		if seen[e.EventID] != 1 {
			t.Errorf("event %d (%s %s) sent %d times, want once", e.EventID, e.EventType, e.Step, seen[e.EventID])
		}
	}
	if len(got) != len(table) {
		t.Errorf("stream sent %d events, the table has %d", len(got), len(table))
	}
	var last int64
	for _, f := range frames {
		if f.ID == "" {
			continue
		}
		n, _ := strconv.ParseInt(f.ID, 10, 64)
		if n <= last {
			t.Errorf("id line %d after %d", n, last)
		}
		last = n
	}
}
