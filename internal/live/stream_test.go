package live_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/live"
	"github.com/millrace/millrace/internal/live/livetest"
)

// memSource is a Source over an in-memory event table.
type memSource struct {
	hub  *live.Hub
	mu   sync.Mutex
	exec map[int64]api.ExecStatus
	evs  []api.Event // in commit order, not necessarily id order
}

func newMem() *memSource {
	return &memSource{hub: live.NewHub(), exec: map[int64]api.ExecStatus{}}
}

func (m *memSource) Execution(_ context.Context, id int64) (api.Execution, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.exec[id]
	if !ok {
		return api.Execution{}, live.ErrNotFound
	}
	return api.Execution{ExecutionID: id, Status: st}, nil
}

func (m *memSource) EventsAfter(_ context.Context, execID, after int64, limit int) ([]api.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Event
	for _, e := range m.evs {
		if e.ExecutionID == execID && e.EventID > after {
			out = append(out, e)
		}
	}
	sortEvents(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memSource) FeedAfter(_ context.Context, after int64, limit int) ([]api.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Event
	for _, e := range m.evs {
		if e.EventID > after && live.Terminal(e.EventType) || e.EventID > after && e.EventType == api.EvPlaybookStarted {
			out = append(out, e)
		}
	}
	sortEvents(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func sortEvents(evs []api.Event) {
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && evs[j].EventID < evs[j-1].EventID; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
}

func (m *memSource) Subscribe(execID int64) (<-chan struct{}, func()) { return m.hub.Subscribe(execID) }
func (m *memSource) SubscribeFeed() (<-chan struct{}, func())         { return m.hub.SubscribeFeed() }

// commit appends events and wakes subscribers, as the server's post-commit
// publisher does.
func (m *memSource) commit(evs ...api.Event) {
	m.mu.Lock()
	var notes []api.LiveNote
	for _, e := range evs {
		if _, ok := m.exec[e.ExecutionID]; !ok {
			m.exec[e.ExecutionID] = api.ExecRunning
		}
		if live.Terminal(e.EventType) {
			m.exec[e.ExecutionID] = api.ExecCompleted
		}
		m.evs = append(m.evs, e)
		notes = append(notes, api.LiveNote{ExecutionID: e.ExecutionID, EventID: e.EventID, EventType: e.EventType})
	}
	m.mu.Unlock()
	m.hub.Notify(notes)
}

func open(t *testing.T, url, lastID string) (*http.Response, *livetest.Conn) {
	t.Helper()
	h := map[string]string{}
	if lastID != "" {
		h["Last-Event-ID"] = lastID
	}
	c := livetest.Open(t, url, h)
	return c.Resp, c
}

// next returns the next frame that is not a comment.
func next(t *testing.T, c *livetest.Conn) livetest.Frame {
	t.Helper()
	f, ok := c.Next(t)
	if !ok {
		t.Fatal("stream ended early")
	}
	return f
}

func eventOf(t *testing.T, f livetest.Frame) api.Event { return livetest.Event(t, f) }

func server(t *testing.T, src *memSource, cfg live.Config) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /executions/{id}/stream", func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		cfg.Stream(w, r, src, id)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) { cfg.Feed(w, r, src) })
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestStreamSendsEveryEventOnceInOrderThenEnds(t *testing.T) {
	t.Parallel()
	src := newMem()
	gen := ids.New(1)
	const exec = 7
	src.commit(api.Event{EventID: gen.Next(), ExecutionID: exec, EventType: api.EvPlaybookStarted})
	url := server(t, src, live.Config{Poll: time.Hour})
	_, ch := open(t, fmt.Sprintf("%s/executions/%d/stream", url, exec), "")
	var want []int64
	src.mu.Lock()
	want = append(want, src.evs[0].EventID)
	src.mu.Unlock()
	// Commits while the client reads: each batch must arrive, woken by the hub.
	go func() {
		for i := 0; i < 50; i++ {
			src.commit(api.Event{EventID: gen.Next(), ExecutionID: exec, EventType: api.EvCommandIssued},
				api.Event{EventID: gen.Next(), ExecutionID: exec + 1, EventType: api.EvCommandIssued}) // another execution
		}
		src.commit(api.Event{EventID: gen.Next(), ExecutionID: exec, EventType: api.EvPlaybookCompleted})
	}()
	var got []int64
	for {
		f := next(t, ch)
		if f.Event == "end" {
			break
		}
		ev := eventOf(t, f)
		if ev.ExecutionID != exec {
			t.Fatalf("event of execution %d in the stream of %d", ev.ExecutionID, exec)
		}
		got = append(got, ev.EventID)
	}
	src.mu.Lock()
	want = want[:0]
	for _, e := range src.evs {
		if e.ExecutionID == exec {
			want = append(want, e.EventID)
		}
	}
	src.mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %d events %v\nwant %d %v", len(got), got, len(want), want)
	}
	if f, ok := ch.NextRaw(t); ok {
		t.Fatalf("stream goes on after the end frame: %+v", f)
	}
}

func TestStreamResumesAfterLastEventID(t *testing.T) {
	t.Parallel()
	src := newMem()
	gen := ids.New(2)
	const exec = 9
	var all []int64
	for i := 0; i < 10; i++ {
		id := gen.Next()
		all = append(all, id)
		src.commit(api.Event{EventID: id, ExecutionID: exec, EventType: api.EvCommandIssued})
	}
	url := server(t, src, live.Config{})
	_, ch := open(t, fmt.Sprintf("%s/executions/%d/stream", url, exec), strconv.FormatInt(all[3], 10))
	for _, want := range all[4:] {
		if ev := eventOf(t, next(t, ch)); ev.EventID != want {
			t.Fatalf("got event %d, want %d", ev.EventID, want)
		}
	}
	end := gen.Next()
	src.commit(api.Event{EventID: end, ExecutionID: exec, EventType: api.EvPlaybookFailed})
	if ev := eventOf(t, next(t, ch)); ev.EventID != end {
		t.Fatalf("got %d, want the end %d", ev.EventID, end)
	}
	if f := next(t, ch); f.Event != "end" {
		t.Fatalf("got %+v, want the end frame", f)
	}
	// ?after= works like the header; an ended execution ends at once.
	_, ch = open(t, fmt.Sprintf("%s/executions/%d/stream?after=%d", url, exec, all[8]), "")
	for _, want := range []int64{all[9], end} {
		if ev := eventOf(t, next(t, ch)); ev.EventID != want {
			t.Fatalf("got %d, want %d", ev.EventID, want)
		}
	}
	if f := next(t, ch); f.Event != "end" {
		t.Fatalf("got %+v, want the end frame", f)
	}
}

// An event that commits after one with a higher id (another committer or
// server) still arrives, once, without an id line so Last-Event-ID stays
// the highest id sent.
func TestStreamDeliversALateCommitOnceWithoutMovingTheResumePoint(t *testing.T) {
	t.Parallel()
	src := newMem()
	gen := ids.New(3)
	const exec = 11
	early, later := gen.Next(), gen.Next()
	src.commit(api.Event{EventID: later, ExecutionID: exec, EventType: api.EvCommandIssued})
	url := server(t, src, live.Config{Poll: time.Hour})
	_, ch := open(t, fmt.Sprintf("%s/executions/%d/stream", url, exec), "")
	if f := next(t, ch); f.ID != strconv.FormatInt(later, 10) {
		t.Fatalf("first frame %+v, want id %d", f, later)
	}
	src.commit(api.Event{EventID: early, ExecutionID: exec, EventType: api.EvCommandClaimed})
	f := next(t, ch)
	if ev := eventOf(t, f); ev.EventID != early || f.ID != "" {
		t.Fatalf("late frame %+v, want event %d without an id line", f, early)
	}
	last := gen.Next()
	src.commit(api.Event{EventID: last, ExecutionID: exec, EventType: api.EvPlaybookCompleted})
	if f := next(t, ch); f.ID != strconv.FormatInt(last, 10) {
		t.Fatalf("frame %+v, want %d (nothing twice)", f, last)
	}
	if f := next(t, ch); f.Event != "end" {
		t.Fatalf("got %+v, want the end frame", f)
	}
}

func TestStreamUnknownExecutionIs404JSON(t *testing.T) {
	t.Parallel()
	url := server(t, newMem(), live.Config{})
	resp, _ := open(t, url+"/executions/404/stream", "")
	if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d, content type %q; want 404 JSON", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `"execution_not_found"`) {
		t.Fatalf("body %s", b)
	}
	resp, _ = open(t, url+"/executions/404/stream", "abc")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad Last-Event-ID: status %d, want 400", resp.StatusCode)
	}
}

func TestStreamSendsKeepAlives(t *testing.T) {
	t.Parallel()
	src := newMem()
	src.commit(api.Event{EventID: 1, ExecutionID: 5, EventType: api.EvPlaybookStarted})
	url := server(t, src, live.Config{KeepAlive: 20 * time.Millisecond})
	_, ch := open(t, url+"/executions/5/stream", "")
	if f := next(t, ch); f.Event != api.EvPlaybookStarted {
		t.Fatalf("first frame %+v", f)
	}
	for {
		f, ok := ch.NextRaw(t)
		if !ok {
			t.Fatal("stream ended without a keep-alive")
		}
		if f.Event == "comment" && f.Data == "keep-alive" {
			return
		}
	}
}

func TestStreamEndsWhenDoneCloses(t *testing.T) {
	t.Parallel()
	src := newMem()
	src.commit(api.Event{EventID: 1, ExecutionID: 5, EventType: api.EvPlaybookStarted})
	done := make(chan struct{})
	url := server(t, src, live.Config{Done: done})
	_, ch := open(t, url+"/executions/5/stream", "")
	next(t, ch)
	close(done)
	for {
		if _, ok := ch.NextRaw(t); !ok {
			return
		}
	}
}

func TestFeedSendsStartsAndEndsOfEveryExecution(t *testing.T) {
	t.Parallel()
	src := newMem()
	gen := ids.New(4)
	old := gen.Next()
	src.commit(api.Event{EventID: old, ExecutionID: 1, EventType: api.EvPlaybookStarted})
	url := server(t, src, live.Config{Poll: time.Hour})
	_, ch := open(t, url+"/stream", strconv.FormatInt(old, 10))
	var want []int64
	for exec := int64(2); exec < 5; exec++ {
		s, c, e := gen.Next(), gen.Next(), gen.Next()
		src.commit(api.Event{EventID: s, ExecutionID: exec, EventType: api.EvPlaybookStarted})
		src.commit(api.Event{EventID: c, ExecutionID: exec, EventType: api.EvCommandIssued})
		src.commit(api.Event{EventID: e, ExecutionID: exec, EventType: api.EvPlaybookCompleted})
		want = append(want, s, e)
	}
	for _, w := range want {
		if ev := eventOf(t, next(t, ch)); ev.EventID != w {
			t.Fatalf("feed sent %d (%s), want %d", ev.EventID, ev.EventType, w)
		}
	}
}
