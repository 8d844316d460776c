package flow

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

const (
	// backlogFactor stretches RedeliverAfter while the consumer still has
	// undelivered messages: then an unclaimed command is most likely just
	// queued, and re-notifying it would only grow the backlog.
	backlogFactor = 10
	// reapBatch is how many due commands one reaper read returns.
	reapBatch = 500
)

var mReaped = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_reaper_due_total", Help: "Commands the reaper found unclaimed or with an expired lease."})

// ReaperConfig configures a Reaper.
// Both durations must be positive; package config owns their defaults.
type ReaperConfig struct {
	Interval       time.Duration // how often to scan for due commands
	RedeliverAfter time.Duration // how long a command may stay unclaimed before it is notified again
	// Backlog reports how many messages the command consumers (the
	// default pool's and every worker pool's) have not delivered yet, and
	// when the stream was created (a notification published
	// before that was lost with an earlier stream); nil or an error means
	// "unknown", treated as no backlog.
	Backlog func(ctx context.Context) (pending int64, streamCreated time.Time, err error)
}

// Reaper finds commands that need a new notification (never claimed, or
// lease expired) and marks one pending on their rows for the relay, so
// losing every message in NATS loses no work.
type Reaper struct {
	svc *Service
	cfg ReaperConfig
	log *slog.Logger
}

// NewReaper builds the command reaper of s.
func (s *Service) NewReaper(cfg ReaperConfig) *Reaper {
	return &Reaper{svc: s, cfg: cfg, log: s.log}
}

// Run reaps every Interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := r.ReapOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reaper pass failed; will retry", "err", err)
		}
	}
}

// ReapOnce runs one reaper pass and returns how many commands it
// re-notified.
func (r *Reaper) ReapOnce(ctx context.Context) (int, error) {
	now := time.Now().UTC()
	cutoff := now.Add(-r.cfg.RedeliverAfter)
	if r.cfg.Backlog != nil {
		if n, created, err := r.cfg.Backlog(ctx); err == nil && n > 0 {
			// Queued notifications are most likely just waiting for a
			// worker; re-notifying would only grow the backlog. Those
			// published before the stream was (re)created are lost, though.
			cutoff = now.Add(-backlogFactor * r.cfg.RedeliverAfter)
			if created.After(cutoff) {
				cutoff = created
			}
		}
	}
	total := 0
	for {
		due, err := store.ReadValue(ctx, r.svc.st, func(q store.Querier) ([]store.Command, error) {
			return q.CommandsDue(ctx, now, cutoff, reapBatch)
		})
		if err != nil {
			return total, err
		}
		if len(due) == 0 {
			return total, nil
		}
		mReaped.Add(float64(len(due)))
		n, err := r.svc.Republish(ctx, due, now, cutoff)
		total += n
		if err != nil {
			return total, err
		}
		r.log.Info("reaper re-notified commands", "count", n)
		if len(due) < reapBatch {
			return total, nil
		}
	}
}

// Republish re-notifies commands that the reaper found due (by the rule of
// store.Querier.CommandsDue with now and cutoff). Each is re-checked inside
// its transaction, so servers reaping at the same time, or a claim that
// landed in between, do not produce extra notifications. It returns how
// many were marked.
func (s *Service) Republish(ctx context.Context, due []store.Command, now, cutoff time.Time) (int, error) {
	n := 0
	for _, c := range due {
		sent := false
		err := s.st.Do(ctx, c.ExecutionID, func(ctx context.Context, tx store.Tx) error {
			cur, err := tx.CommandGet(ctx, c.EventID)
			if err != nil || !stillDue(cur, now, cutoff) {
				return err
			}
			if _, err := s.renotify(ctx, tx, c.EventID, s.now()); err != nil {
				return err
			}
			sent = true
			return nil
		})
		if err != nil {
			return n, err
		}
		if sent {
			n++
		}
	}
	if n > 0 {
		mRepublished.Add(float64(n))
		s.wake()
	}
	return n, nil
}

// stillDue applies CommandsDue's rule to one command.
func stillDue(c store.Command, now, cutoff time.Time) bool {
	switch c.Status {
	case api.CmdIssued:
		return !c.PublishedAt.After(cutoff)
	case api.CmdClaimed, api.CmdRunning:
		return c.LeaseExpires != nil && !c.LeaseExpires.After(now) &&
			(c.PublishedAt.Before(*c.LeaseExpires) || !c.PublishedAt.After(cutoff))
	}
	return false
}
