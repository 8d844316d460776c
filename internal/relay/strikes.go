package relay

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
)

// DefaultRowBackoff is the first wait before a notification that failed on
// its own is tried again; it doubles per failure up to maxRowBackoff.
const DefaultRowBackoff = time.Second

// maxRowBackoff caps a failing notification's wait, parked ones included:
// a parked row is still tried now and then, so one that was poisoned by a
// passing cause (a stream's max_msg_size since raised) goes out by itself.
const maxRowBackoff = time.Minute

var mParked = promauto.NewGauge(prometheus.GaugeOpts{Name: "millrace_relay_parked",
	Help: "Notifications this relay parked: they failed to publish 10 times (relay.Config.ParkAfter) while others went through (`millrace verify` lists them under notification_pending)."})

// strikeKey names one pending notification: an outbox row, or a command's
// publishes-th notification (a re-notification is a new message).
type strikeKey struct {
	outboxID  int64
	eventID   int64
	publishes int
}

func noticeKey(n store.Notice) strikeKey {
	return strikeKey{eventID: n.EventID, publishes: n.Publishes}
}

func (p pending) key() strikeKey {
	if p.outboxID != 0 {
		return strikeKey{outboxID: p.outboxID}
	}
	return strikeKey{eventID: p.notice.EventID, publishes: p.notice.Publishes}
}

type strike struct {
	n    int       // failures so far
	next time.Time // not tried again before
}

// strikes is the per-notification backoff of a relay: a notification that
// fails while others of its round go through (too large for NATS
// max_payload, an invalid subject, a stream that refuses it) waits out a
// backoff of its own instead of holding the relay back, and after
// Config.ParkAfter failures it is parked: logged once as an error, counted
// in millrace_relay_parked, retried only every maxRowBackoff. Its pending
// state stays in the store, so `millrace verify` reports it and another
// server's relay still tries it. Only the publish loop's goroutine uses it.
type strikes struct {
	m         map[strikeKey]*strike
	parkAfter int
	parked    atomic.Int64 // read by Parked from any goroutine
}

// waiting reports whether k is backing off at now.
func (s *strikes) waiting(k strikeKey, now time.Time) bool {
	st := s.m[k]
	return st != nil && now.Before(st.next)
}

func (s *strikes) clear(k strikeKey) {
	if st := s.m[k]; st != nil {
		delete(s.m, k)
		s.park(st, -1)
	}
}

// keep forgets the notifications no longer pending (published by another
// relay, the command ended): only those read this round remain. A batch
// that filled up may leave a struck row unread; it starts over, harmlessly.
func (s *strikes) keep(notices []store.Notice, rows []store.OutboxMsg) {
	if len(s.m) == 0 {
		return
	}
	seen := make(map[strikeKey]bool, len(notices)+len(rows))
	for _, n := range notices {
		seen[noticeKey(n)] = true
	}
	for _, r := range rows {
		seen[strikeKey{outboxID: r.ID}] = true
	}
	for k, st := range s.m {
		if !seen[k] {
			delete(s.m, k)
			s.park(st, -1)
		}
	}
}

// park moves the parked count by d when st is parked.
func (s *strikes) park(st *strike, d int) {
	if st.n >= s.parkAfter {
		s.parked.Add(int64(d))
		mParked.Add(float64(d))
	}
}

// strike records one failure of the notification k.
func (r *Relay) strike(k strikeKey, msg bus.OutMsg, err error, now time.Time) {
	st := r.strikes.m[k]
	if st == nil {
		st = &strike{}
		r.strikes.m[k] = st
	}
	st.n++
	wait := maxRowBackoff // parked, or doubled past it
	if st.n < r.cfg.ParkAfter && st.n < 16 {
		wait = min(r.cfg.RowBackoff<<(st.n-1), maxRowBackoff)
	}
	st.next = now.Add(wait)
	if st.n == r.cfg.ParkAfter {
		r.strikes.parked.Add(1)
		mParked.Inc()
		r.log.Error("a notification failed to publish every time while others went through; parked: it is retried every minute and `millrace verify` lists it (notification_pending)",
			"subject", msg.Subject, "msg_id", msg.MsgID, "bytes", len(msg.Data), "failures", st.n, "err", err)
	}
}

// Parked is how many notifications this relay has parked now.
func (r *Relay) Parked() int { return int(r.strikes.parked.Load()) }

// poison reports whether err can only be the message's own fault, never
// an outage: then it strikes the message even if its whole round failed.
func poison(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject)
}
