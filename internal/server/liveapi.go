package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/live"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/wire"
)

// errNoLiveNATS is why a live note was not published.
var errNoLiveNATS = errors.New("not connected to NATS: live notes are skipped (streams poll the event table)")

// originHeader names the server that published a note, so it can skip
// its own (its Hub already had them).
const originHeader = "Millrace-Origin"

// liveLink carries the notes of committed transactions to this server's
// streams (the Hub) and to NATS (<NATS_UPDATES_SUBJECT_PREFIX><id>), and
// the notes of other servers sharing the database to this one's streams.
type liveLink struct {
	s      *Server
	hub    *live.Hub
	pub    *live.Publisher
	origin string
}

func newLiveLink(s *Server) *liveLink {
	l := &liveLink{s: s, hub: live.NewHub(), origin: randomOrigin()}
	l.pub = live.NewPublisher(s.cfg.UpdatesPrefix, l.hub, func(subject string, data []byte) error {
		c := s.nats.get()
		if c == nil {
			return errNoLiveNATS
		}
		// Core NATS: buffered by the client, never awaited.
		return c.NC.PublishMsg(&nats.Msg{Subject: subject, Data: data, Header: nats.Header{originHeader: []string{l.origin}}})
	}, s.log)
	return l
}

func randomOrigin() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// options are the API's live settings.
func (l *liveLink) options() LiveOptions {
	return LiveOptions{Hub: l.hub, Poll: l.s.cfg.LivePoll, Prefix: l.s.cfg.UpdatesPrefix, Remote: l.remote}
}

// remote wakes this server's streams on notes other servers publish on
// subject, while a stream needs them. Without NATS, streams only poll.
func (l *liveLink) remote(subject string) (cancel func()) {
	c := l.s.nats.get()
	if c == nil {
		return func() {}
	}
	sub, err := c.NC.Subscribe(subject, func(m *nats.Msg) {
		if m.Header.Get(originHeader) == l.origin {
			return
		}
		var n api.LiveNote
		if json.Unmarshal(m.Data, &n) == nil {
			l.hub.Notify([]api.LiveNote{n})
		}
	})
	if err != nil {
		l.s.log.Warn("live stream: cannot subscribe to other servers' notes; polling", "subject", subject, "err", err)
		return func() {}
	}
	return func() { _ = sub.Unsubscribe() }
}

// committed is the store's AfterCommit: it runs on a committer, so it only
// converts and queues.
func (l *liveLink) committed(evs []store.Event) {
	notes := make([]api.LiveNote, len(evs))
	for i, e := range evs {
		notes[i] = api.LiveNote{ExecutionID: e.ExecutionID, EventID: e.EventID, EventType: e.EventType, Step: e.Step, Status: e.Status, At: e.CreatedAt}
	}
	l.pub.Offer(notes)
}

// LiveOptions are the settings of the API's live streams.
type LiveOptions struct {
	// Hub wakes streams on this server's commits (without one they poll).
	Hub *live.Hub
	// Poll is how often a stream re-reads without a wake-up (0: 5 s).
	Poll time.Duration
	// Prefix and Remote: Remote(subject) makes the Hub hear other servers'
	// notes on subject until the returned cancel; nil: this server's only.
	Prefix string
	Remote func(subject string) (cancel func())
}

// WithLive sets the live streams' wake-ups and poll.
func WithLive(o LiveOptions) Option { return func(a *API) { a.live.LiveOptions = o } }

// liveAPI is the API's part of live streams.
type liveAPI struct {
	LiveOptions
	done chan struct{} // closed by StopStreams
	once sync.Once
}

func (a *API) liveRoutes() {
	if a.live.Hub == nil {
		a.live.Hub = live.NewHub()
	}
	a.live.done = make(chan struct{})
	a.handle("GET /api/executions/{id}/stream", auth.Readers, a.executionStream)
	a.handle("GET /api/stream", auth.Readers, a.executionFeed)
}

// StopStreams ends every live stream (clients reconnect with Last-Event-ID
// elsewhere or later): a shutdown must not wait for them.
func (a *API) StopStreams() {
	a.live.once.Do(func() { close(a.live.done) })
}

func (a *API) liveConfig() live.Config {
	return live.Config{Done: a.live.done, Log: a.log, Poll: a.live.Poll}
}

func (a *API) executionStream(w http.ResponseWriter, r *http.Request) {
	id, err := pathInt(r, "id")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.liveConfig().Stream(w, r, storeSource{a}, id)
}

func (a *API) executionFeed(w http.ResponseWriter, r *http.Request) {
	a.liveConfig().Feed(w, r, storeSource{a})
}

// storeSource is live.Source and live.FeedSource over this server's store
// and hub.
type storeSource struct{ a *API }

func (s storeSource) Execution(ctx context.Context, id int64) (api.Execution, error) {
	e, err := store.ReadValue(ctx, s.a.st, func(q store.Querier) (store.Execution, error) {
		return q.ExecutionGet(ctx, id)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return api.Execution{}, live.ErrNotFound
	case err != nil:
		e, caused := apiError(err)
		if !caused {
			s.a.log.Error("live stream: reading the execution failed", "execution_id", id, "err", err)
		}
		return api.Execution{}, e
	}
	return wire.Execution(e), nil
}

func (s storeSource) EventsAfter(ctx context.Context, execID, afterID int64, limit int) ([]api.Event, error) {
	return s.a.eventsAfter(ctx, execID, afterID, nil, limit)
}

func (s storeSource) FeedAfter(ctx context.Context, afterID int64, limit int) ([]api.Event, error) {
	return s.a.eventsAfter(ctx, 0, afterID, live.FeedTypes, limit)
}

func (s storeSource) Subscribe(execID int64) (<-chan struct{}, func()) {
	return s.a.live.subscribe(live.Subject(s.a.live.Prefix, execID), func() (<-chan struct{}, func()) {
		return s.a.live.Hub.Subscribe(execID)
	})
}

func (s storeSource) SubscribeFeed() (<-chan struct{}, func()) {
	return s.a.live.subscribe(s.a.live.Prefix+">", s.a.live.Hub.SubscribeFeed)
}

// subscribe subscribes to the Hub and, for the Hub, to other servers'
// notes on subject.
func (l *liveAPI) subscribe(subject string, hub func() (<-chan struct{}, func())) (<-chan struct{}, func()) {
	ch, cancel := hub()
	if l.Remote == nil {
		return ch, cancel
	}
	stop := l.Remote(subject)
	return ch, func() { stop(); cancel() }
}

// eventsAfter reads events with their results (large ones are stored by
// reference; readers never see that).
func (a *API) eventsAfter(ctx context.Context, execID, afterID int64, types []string, limit int) ([]api.Event, error) {
	var evs []store.Event
	err := a.st.Read(ctx, func(q store.Querier) error {
		var err error
		if evs, err = q.EventsAfter(ctx, execID, afterID, types, limit); err != nil {
			return err
		}
		for i := range evs {
			if evs[i].Result, err = flow.LoadResult(ctx, q, evs[i].Result); err != nil {
				return err
			}
		}
		return nil
	})
	return wire.Events(evs), err
}

// eventsPage reads ?after= and ?limit= of GET /api/executions/{id}/events:
// paged is false when neither is given (then every event is returned).
func eventsPage(r *http.Request) (after int64, limit int, paged bool, err error) {
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return 0, 0, false, apierr.New(apierr.BadRequest, "after must be an event id (a non-negative integer), got %q", v)
		}
		paged = true
	}
	paged = paged || q.Get("limit") != ""
	limit, err = queryInt(r, "limit", MaxPageSize, 1, MaxPageSize)
	return after, limit, paged, err
}
