package live

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/api"
)

var (
	mNotesDropped = promauto.NewCounter(prometheus.CounterOpts{
		Name: "millrace_live_notes_dropped_total",
		Help: "Live notes dropped because the publisher queue was full (streams catch up by polling).",
	})
	mNotesPublished = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "millrace_live_notes_published_total",
		Help: "Live notes published on NATS, by outcome (ok, error: NATS down or not connected).",
	}, []string{"outcome"})
)

// Hub fans wake-ups out to the streams of this process. Subscribers get a
// coalesced wake-up (a channel of capacity one): a stream that is busy
// writing misses nothing, since it reads the event table afterwards.
type Hub struct {
	mu   sync.Mutex
	subs map[int64]map[chan struct{}]struct{}
	feed map[chan struct{}]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: map[int64]map[chan struct{}]struct{}{}, feed: map[chan struct{}]struct{}{}}
}

// Subscribe wakes the returned channel after events of execID.
func (h *Hub) Subscribe(execID int64) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	m := h.subs[execID]
	if m == nil {
		m = map[chan struct{}]struct{}{}
		h.subs[execID] = m
	}
	m[ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			// m stays h.subs[execID] while ch is in it.
			delete(m, ch)
			if len(m) == 0 {
				delete(h.subs, execID)
			}
			h.mu.Unlock()
		})
	}
}

// SubscribeFeed wakes the returned channel after FeedTypes events.
func (h *Hub) SubscribeFeed() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.feed[ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.feed, ch)
			h.mu.Unlock()
		})
	}
}

// Notify wakes the subscribers of the notes' executions (and the feed's,
// for FeedTypes events). It never blocks.
func (h *Hub) Notify(notes []api.LiveNote) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last int64 = -1
	feed := false
	for _, n := range notes {
		if isFeedType(n.EventType) {
			feed = true
		}
		if n.ExecutionID == last {
			continue // notes come grouped by transaction: one wake is enough
		}
		last = n.ExecutionID
		for ch := range h.subs[n.ExecutionID] {
			wakeUp(ch)
		}
	}
	if feed {
		for ch := range h.feed {
			wakeUp(ch)
		}
	}
}

func wakeUp(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func isFeedType(t string) bool {
	for _, f := range FeedTypes {
		if t == f {
			return true
		}
	}
	return false
}

// Lifecycle reports whether events of this type are published on NATS:
// command.*, step.exit, playbook.*, execution.cancelled and loop.*.
func Lifecycle(eventType string) bool {
	switch {
	case strings.HasPrefix(eventType, "command."), strings.HasPrefix(eventType, "playbook."), strings.HasPrefix(eventType, "loop."):
		return true
	}
	return eventType == api.EvStepExit || eventType == api.EvExecCancelled
}

// Subject is the NATS subject of an execution's notes.
func Subject(prefix string, execID int64) string {
	return prefix + strconv.FormatInt(execID, 10)
}

// Publisher takes the notes of committed transactions off the commit path
// (Offer never blocks) and, from its own goroutine (Run), wakes the Hub
// and publishes the lifecycle ones on core NATS. Notes are wake-ups, not
// the truth: one dropped (a full queue, NATS down) only delays a stream
// until its next poll.
type Publisher struct {
	prefix  string
	hub     *Hub
	publish func(subject string, data []byte) error
	log     *slog.Logger
	queue   chan []api.LiveNote
}

// QueueSize is how many committed transactions' notes may wait for Run.
const QueueSize = 4096

// NewPublisher builds a publisher. publish sends one core NATS message
// (best effort, not awaited); nil publishes to the Hub only.
func NewPublisher(prefix string, hub *Hub, publish func(subject string, data []byte) error, log *slog.Logger) *Publisher {
	return &Publisher{prefix: prefix, hub: hub, publish: publish, log: log, queue: make(chan []api.LiveNote, QueueSize)}
}

// Offer queues the notes of one committed transaction, or drops them when
// the queue is full.
func (p *Publisher) Offer(notes []api.LiveNote) {
	if len(notes) == 0 {
		return
	}
	select {
	case p.queue <- notes:
	default:
		mNotesDropped.Add(float64(len(notes)))
	}
}

// Run delivers queued notes until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	failing := false
	for {
		var notes []api.LiveNote
		select {
		case <-ctx.Done():
			return
		case notes = <-p.queue:
		}
		if p.hub != nil {
			p.hub.Notify(notes)
		}
		if p.publish == nil {
			continue
		}
		for _, n := range notes {
			if !Lifecycle(n.EventType) {
				continue
			}
			b, _ := json.Marshal(n)
			if err := p.publish(Subject(p.prefix, n.ExecutionID), b); err != nil {
				mNotesPublished.WithLabelValues("error").Inc()
				if !failing {
					p.log.Warn("live notes are not reaching NATS (streams through the gateway fall back to polling)", "err", err)
				}
				failing = true
				continue
			}
			if failing {
				p.log.Info("live notes reach NATS again")
				failing = false
			}
			mNotesPublished.WithLabelValues("ok").Inc()
		}
	}
}
