package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/ids"
)

// ErrNotFound is what a Source returns (possibly wrapped) for an execution
// that does not exist: Stream answers 404 execution_not_found.
var ErrNotFound = errors.New("execution not found")

// Source is what a stream reads from. The server implements it over its
// store and Hub; the gateway over the server's HTTP API and a NATS
// subscription to <NATS_UPDATES_SUBJECT_PREFIX><execution_id>.
//
// A Source's errors that are *apierr.Error reach the client as they are
// (before the stream starts); ErrNotFound becomes 404; others become 500
// internal (the gateway returns apierr upstream_unavailable itself).
type Source interface {
	// Execution returns the execution, or ErrNotFound.
	Execution(ctx context.Context, id int64) (api.Execution, error)
	// EventsAfter returns up to limit events of the execution with
	// event_id > afterID, by event_id ascending.
	EventsAfter(ctx context.Context, execID, afterID int64, limit int) ([]api.Event, error)
	// Subscribe returns a channel that receives (coalesced, best effort)
	// after new events of the execution may have committed, and a cancel
	// function that ends the subscription. Wake-ups are hints: a stream
	// reads the event table again on each one and also polls slowly.
	Subscribe(execID int64) (wake <-chan struct{}, cancel func())
}

// FeedSource is what the global feed reads from.
type FeedSource interface {
	// FeedAfter returns up to limit events, of any execution, of the types
	// in FeedTypes with event_id > afterID, by event_id ascending.
	FeedAfter(ctx context.Context, afterID int64, limit int) ([]api.Event, error)
	// SubscribeFeed is Subscribe for any execution's FeedTypes events.
	SubscribeFeed() (wake <-chan struct{}, cancel func())
}

// FeedTypes are the event types of the global feed: an execution's start
// and end, enough to keep a list of executions current.
var FeedTypes = []string{api.EvPlaybookStarted, api.EvPlaybookCompleted, api.EvPlaybookFailed, api.EvExecCancelled}

// Terminal reports whether an event of this type ends an execution.
func Terminal(eventType string) bool {
	switch eventType {
	case api.EvPlaybookCompleted, api.EvPlaybookFailed, api.EvExecCancelled:
		return true
	}
	return false
}

// Defaults of Config.
const (
	DefaultKeepAlive = 15 * time.Second
	DefaultPoll      = 5 * time.Second
	// DefaultWakeLookback is how far (in event-id time) below the highest
	// event sent a read after a wake-up looks again, for events that
	// committed after an event with a higher id (see docs/gateway.md).
	DefaultWakeLookback = time.Second
	// DefaultPollLookback is the same for the slow poll: it covers a
	// transaction that committed late (the store bounds one at 30 s) or a
	// server whose clock is behind another's by up to this much.
	DefaultPollLookback = 45 * time.Second
	// pageSize is how many events one read asks for.
	pageSize = 500
)

// Config tunes streams; the zero value uses the defaults.
type Config struct {
	KeepAlive    time.Duration // ": keep-alive" comment interval
	Poll         time.Duration // read again this often without a wake-up
	WakeLookback time.Duration
	PollLookback time.Duration
	// Done, when closed, ends every stream (a server shutting down must not
	// wait for clients that never hang up). Clients reconnect and resume.
	Done <-chan struct{}
	Log  *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.WakeLookback <= 0 {
		c.WakeLookback = DefaultWakeLookback
	}
	if c.PollLookback <= 0 {
		c.PollLookback = DefaultPollLookback
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Stream serves one execution's events as Server-Sent Events with the
// default Config.
func Stream(w http.ResponseWriter, r *http.Request, src Source, execID int64) {
	Config{}.Stream(w, r, src, execID)
}

// Feed serves the global feed with the default Config.
func Feed(w http.ResponseWriter, r *http.Request, src FeedSource) {
	Config{}.Feed(w, r, src)
}

// Stream serves one execution's events as Server-Sent Events: a frame per
// event (`id: <event_id>`, `event: <event_type>`, `data: <api.Event>`),
// every event read back from the event table, starting after the
// Last-Event-ID header (or ?after=; neither: from the first event). After
// the event that ends the execution it sends `event: end` and returns. An
// unknown execution is a 404 JSON error, answered before any SSE header.
func (c Config) Stream(w http.ResponseWriter, r *http.Request, src Source, execID int64) {
	c = c.withDefaults()
	ctx := r.Context()
	after, err := ResumePoint(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	// Subscribe before the first read, so a commit between the read and
	// the wait still wakes us.
	wake, cancel := src.Subscribe(execID)
	defer cancel()
	exec, err := src.Execution(ctx, execID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			err = apierr.New(apierr.ExecNotFound, "execution %d does not exist", execID)
		} else if _, ok := apierr.As(err); !ok {
			c.Log.Error("live stream: reading the execution failed", "execution_id", execID, "err", err)
		}
		writeErr(w, err)
		return
	}
	sse, ok := startSSE(w)
	if !ok {
		return
	}
	s := &cursor{resume: after, last: after, sent: map[int64]struct{}{}}
	read := func(lookback time.Duration) error {
		return s.read(ctx, lookback, func(after int64) ([]api.Event, error) {
			return src.EventsAfter(ctx, execID, after, pageSize)
		}, sse)
	}
	// An execution that had already ended when we looked has all its events
	// committed (the end is the last): one read and the end frame.
	endedBefore := exec.Status.Terminal()
	c.loop(ctx, sse, s, wake, read, endedBefore, func() {
		sse.end(fmt.Sprintf(`{"execution_id":%d}`, execID))
	})
}

// Feed serves, as Server-Sent Events, the FeedTypes events of every
// execution: frames like Stream's, never an end frame. It starts after
// Last-Event-ID (or ?after=); neither: from now.
func (c Config) Feed(w http.ResponseWriter, r *http.Request, src FeedSource) {
	c = c.withDefaults()
	ctx := r.Context()
	after, err := ResumePoint(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	s := &cursor{resume: after, last: after, sent: map[int64]struct{}{}}
	if after == 0 && r.Header.Get("Last-Event-ID") == "" && r.URL.Query().Get("after") == "" {
		// From now; the first read's lookback re-sends the last moments,
		// which a list of executions applies idempotently.
		s.last = ids.Floor(time.Now())
		s.resume = s.last - ids.Span(c.PollLookback)
	}
	wake, cancel := src.SubscribeFeed()
	defer cancel()
	sse, ok := startSSE(w)
	if !ok {
		return
	}
	read := func(lookback time.Duration) error {
		return s.read(ctx, lookback, func(after int64) ([]api.Event, error) {
			return src.FeedAfter(ctx, after, pageSize)
		}, sse)
	}
	c.loop(ctx, sse, s, wake, read, false, nil)
}

// loop reads once, then again on every wake-up (short lookback) and poll
// tick (long lookback), with keep-alives, until the client leaves, Done
// closes, or the execution ended (then end runs).
func (c Config) loop(ctx context.Context, sse *sseWriter, s *cursor, wake <-chan struct{}, read func(time.Duration) error, endedBefore bool, end func()) {
	keep := time.NewTicker(c.KeepAlive)
	defer keep.Stop()
	poll := time.NewTicker(c.Poll)
	defer poll.Stop()
	lookback := c.PollLookback
	for {
		if err := read(lookback); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.Log.Warn("live stream: reading events failed; retrying at the next poll", "err", err)
		} else if sse.err != nil {
			return // the client is gone
		} else if end != nil && (endedBefore || s.ended) {
			if !endedBefore {
				// An event with a lower id may commit just after the end
				// (another committer or server): look once more.
				_ = read(c.PollLookback)
			}
			end()
			return
		}
	wait:
		select {
		case <-ctx.Done():
			return
		case <-c.Done:
			return
		case <-keep.C:
			if sse.comment("keep-alive") != nil {
				return
			}
			goto wait
		case <-wake:
			lookback = c.WakeLookback
		case <-poll.C:
			lookback = c.PollLookback
		}
	}
}

// cursor remembers what one connection sent. Events usually commit in id
// order, but not always (ids are taken before commit, by several
// committers and servers): every read looks back below the highest id
// sent, and sent holds the ids of that window so none goes out twice.
type cursor struct {
	resume int64 // the client's Last-Event-ID: never read at or below it
	last   int64 // highest event id sent (or resume)
	sent   map[int64]struct{}
	ended  bool // a terminal event was sent
}

// read fetches everything after the lookback floor, page by page, and
// writes the events not yet sent.
func (s *cursor) read(ctx context.Context, lookback time.Duration, fetch func(after int64) ([]api.Event, error), sse *sseWriter) error {
	from := max(s.resume, s.last-ids.Span(lookback))
	for {
		evs, err := fetch(from)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.EventID <= from {
				continue // a Source that ignores afterID
			}
			from = ev.EventID
			if _, dup := s.sent[ev.EventID]; dup || ev.EventID <= s.resume {
				continue
			}
			if err := sse.event(ev, ev.EventID > s.last); err != nil {
				return nil // the client is gone; loop sees sse.err
			}
			s.sent[ev.EventID] = struct{}{}
			if ev.EventID > s.last {
				s.last = ev.EventID
			}
			if Terminal(ev.EventType) {
				s.ended = true
			}
		}
		if len(evs) < pageSize || ctx.Err() != nil {
			break
		}
	}
	sse.flush()
	s.prune()
	return nil
}

// prune forgets sent ids below any future lookback.
func (s *cursor) prune() {
	floor := s.last - ids.Span(DefaultPollLookback+time.Minute)
	if len(s.sent) < 1024 {
		return
	}
	for id := range s.sent {
		if id < floor {
			delete(s.sent, id)
		}
	}
}

// ResumePoint is where a stream starts: the Last-Event-ID header, else the
// after query parameter, else 0.
func ResumePoint(r *http.Request) (int64, error) {
	v, name := r.Header.Get("Last-Event-ID"), "Last-Event-ID header"
	if v == "" {
		v, name = r.URL.Query().Get("after"), "after parameter"
	}
	if v = strings.TrimSpace(v); v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, apierr.New(apierr.BadRequest, "%s %q is not an event id; send the id of the last event received, or leave it out to start from the beginning", name, v)
	}
	return n, nil
}

type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error // the first write error: the client is gone
}

func startSSE(w http.ResponseWriter) (*sseWriter, bool) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	// A reconnecting EventSource waits this long (ms).
	if _, s.err = fmt.Fprint(w, "retry: 2000\n\n"); s.err != nil {
		return s, false
	}
	s.flush()
	return s, s.err == nil
}

// event writes one frame. withID is false for an event that committed
// after one with a higher id was sent: the frame then carries no id line,
// so the client's Last-Event-ID stays the highest id it has.
func (s *sseWriter) event(ev api.Event, withID bool) error {
	if s.err != nil {
		return s.err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	var f strings.Builder
	if withID {
		fmt.Fprintf(&f, "id: %d\n", ev.EventID)
	}
	fmt.Fprintf(&f, "event: %s\ndata: %s\n\n", ev.EventType, b)
	_, s.err = fmt.Fprint(s.w, f.String())
	return s.err
}

func (s *sseWriter) comment(text string) error {
	if s.err == nil {
		_, s.err = fmt.Fprintf(s.w, ": %s\n\n", text)
	}
	s.flush()
	return s.err
}

func (s *sseWriter) end(data string) {
	if s.err == nil {
		_, s.err = fmt.Fprintf(s.w, "event: end\ndata: %s\n\n", data)
	}
	s.flush()
}

func (s *sseWriter) flush() {
	if s.err == nil {
		s.err = s.rc.Flush()
	}
}

func writeErr(w http.ResponseWriter, err error) {
	e, ok := apierr.As(err)
	if !ok {
		e = apierr.New(apierr.Internal, "internal error; the server log has details")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status())
	_ = json.NewEncoder(w).Encode(apierr.Envelope{Error: e})
}
