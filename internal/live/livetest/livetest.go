// Package livetest is a Server-Sent Events client for tests of live
// streams (the server's and the gateway's).
package livetest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// Frame is one SSE frame; a comment (": keep-alive") has Event "comment".
type Frame struct {
	ID    string
	Event string
	Data  string
}

// Conn is an open stream.
type Conn struct {
	Resp   *http.Response
	frames chan Frame
	cancel context.CancelFunc
}

// Open GETs url with the given headers (Last-Event-ID, Authorization…).
// A non-200 answer is returned with no frames: read Resp.Body.
func Open(t testing.TB, url string, header map[string]string) *Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &Conn{Resp: resp, frames: make(chan Frame, 4096), cancel: cancel}
	t.Cleanup(c.Close)
	if resp.StatusCode == http.StatusOK {
		go read(resp.Body, c.frames)
	} else {
		close(c.frames)
	}
	return c
}

// Close hangs up.
func (c *Conn) Close() {
	c.cancel()
	_ = c.Resp.Body.Close()
}

// Next returns the next frame that is not a comment; ok is false when the
// stream ended. It fails the test after 15 s without one.
func (c *Conn) Next(t testing.TB) (f Frame, ok bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case f, ok := <-c.frames:
			if ok && f.Event == "comment" {
				continue
			}
			return f, ok
		case <-deadline:
			t.Fatal("livetest: no frame within 15s")
			return Frame{}, false
		}
	}
}

// NextRaw is Next including comments.
func (c *Conn) NextRaw(t testing.TB) (Frame, bool) {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		return f, ok
	case <-time.After(15 * time.Second):
		t.Fatal("livetest: no frame within 15s")
		return Frame{}, false
	}
}

// Events reads event frames until the end frame (or the stream's end) and
// returns them decoded. It fails the test if a frame's id line differs
// from its event's id.
func (c *Conn) Events(t testing.TB) (evs []api.Event, ended bool) {
	t.Helper()
	for {
		f, ok := c.Next(t)
		if !ok {
			return evs, false
		}
		if f.Event == "end" {
			return evs, true
		}
		evs = append(evs, Event(t, f))
	}
}

// Event decodes a frame's data, checking its id line (when it has one).
func Event(t testing.TB, f Frame) api.Event {
	t.Helper()
	var ev api.Event
	if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
		t.Fatalf("livetest: frame data %q: %v", f.Data, err)
	}
	if f.ID != "" && f.ID != strconv.FormatInt(ev.EventID, 10) {
		t.Fatalf("livetest: frame id %s carries event %d", f.ID, ev.EventID)
	}
	if f.Event != ev.EventType {
		t.Fatalf("livetest: frame event %q carries a %s", f.Event, ev.EventType)
	}
	return ev
}

func read(body io.Reader, out chan<- Frame) {
	defer close(out)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var f Frame
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if f.Event != "" || len(data) > 0 {
				f.Data = strings.Join(data, "\n")
				out <- f
			}
			f, data = Frame{}, nil
		case strings.HasPrefix(line, ":"):
			out <- Frame{Event: "comment", Data: strings.TrimSpace(line[1:])}
		default:
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "id":
				f.ID = value
			case "event":
				f.Event = value
			case "data":
				data = append(data, value)
			}
		}
	}
}
