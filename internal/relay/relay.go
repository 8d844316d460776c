// Package relay is the bridge from the database to NATS. The publisher
// drains the outbox (rows written in the same transaction as their
// command.issued event) to JetStream with Nats-Msg-Id set, and deletes a row
// only after JetStream acknowledged it. The reaper finds commands that need a
// new notification (never claimed, or lease expired) and re-enqueues them, so
// losing every message in NATS loses no work.
package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/store"
)

// Defaults for Config.
const (
	// DefaultBatchSize is how many outbox rows one publish round sends.
	DefaultBatchSize = 512
	// DefaultPollInterval is how often the publisher looks at the outbox
	// when nobody woke it (rows written by another server process).
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultReapInterval is how often the reaper scans for due commands.
	DefaultReapInterval = 5 * time.Second
	// DefaultRedeliverAfter is how long an issued command may stay
	// unclaimed before it is notified again.
	DefaultRedeliverAfter = 30 * time.Second
	// backlogFactor stretches RedeliverAfter while the consumer still has
	// undelivered messages: then an unclaimed command is most likely just
	// queued, and re-notifying it would only grow the backlog.
	backlogFactor = 10
	maxBackoff    = 5 * time.Second
)

// Publisher sends notifications; *bus.Conn implements it.
type Publisher interface {
	PublishBatch(ctx context.Context, msgs []bus.OutMsg) []error
}

// Config configures a Relay.
type Config struct {
	BatchSize      int
	PollInterval   time.Duration
	ReapInterval   time.Duration
	RedeliverAfter time.Duration
	// Backlog reports how many messages the consumer has not delivered
	// yet, and when the stream was created (a notification published
	// before that was lost with an earlier stream); nil or an error means
	// "unknown", treated as no backlog.
	Backlog func(ctx context.Context) (pending int64, streamCreated time.Time, err error)
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.ReapInterval <= 0 {
		c.ReapInterval = DefaultReapInterval
	}
	if c.RedeliverAfter <= 0 {
		c.RedeliverAfter = DefaultRedeliverAfter
	}
}

// Relay runs the publisher and the reaper.
type Relay struct {
	cfg  Config
	st   *store.Store
	pub  Publisher
	flow *flow.Service
	log  *slog.Logger
	wake chan struct{}
}

// New builds a relay. Call Wake after commits that add outbox rows.
func New(cfg Config, st *store.Store, pub Publisher, fl *flow.Service, log *slog.Logger) *Relay {
	cfg.defaults()
	return &Relay{cfg: cfg, st: st, pub: pub, flow: fl, log: log, wake: make(chan struct{}, 1)}
}

// Wake nudges the publisher; it never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run blocks until ctx ends.
func (r *Relay) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); r.reapLoop(ctx) }()
	r.publishLoop(ctx)
	<-done
}

var (
	mPublished     = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_outbox_published_total", Help: "Notifications acknowledged by JetStream."})
	mPublishErrors = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_outbox_publish_errors_total", Help: "Notifications JetStream did not acknowledge (kept in the outbox and retried)."})
	mReaped        = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_reaper_due_total", Help: "Commands the reaper found unclaimed or with an expired lease."})
)

func (r *Relay) publishLoop(ctx context.Context) {
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
		for {
			n, failed, err := r.publishOnce(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.Warn("outbox read failed; will retry", "err", err)
			}
			if failed == 0 && err == nil {
				backoff = 0
				if n < r.cfg.BatchSize {
					break // drained
				}
				continue
			}
			backoff = min(max(backoff*2, 50*time.Millisecond), maxBackoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			break
		}
	}
}

// publishOnce sends one batch; it returns rows sent, rows that failed.
func (r *Relay) publishOnce(ctx context.Context) (int, int, error) {
	var rows []store.OutboxMsg
	if err := r.st.Read(ctx, func(q store.Querier) error {
		var err error
		rows, err = q.OutboxFetch(ctx, time.Now().UTC(), r.cfg.BatchSize)
		return err
	}); err != nil {
		return 0, 0, err
	}
	if len(rows) == 0 {
		return 0, 0, nil
	}
	msgs := make([]bus.OutMsg, len(rows))
	for i, row := range rows {
		msgs[i] = bus.OutMsg{Subject: row.Subject, MsgID: row.MsgID, Data: row.Payload}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	errs := r.pub.PublishBatch(pctx, msgs)
	cancel()
	acked := make([]int64, 0, len(rows))
	failed := 0
	var firstErr error
	for i, err := range errs {
		if err == nil {
			acked = append(acked, rows[i].ID)
			continue
		}
		failed++
		if firstErr == nil {
			firstErr = err
		}
	}
	if failed > 0 {
		mPublishErrors.Add(float64(failed))
		r.log.Warn("publish to NATS failed; notifications stay in the outbox and will be retried", "failed", failed, "err", firstErr)
	}
	if len(acked) > 0 {
		// Deleting is the last step: if we crash before it, the row is sent
		// again and JetStream's duplicate window or the claim's 409 absorbs it.
		err := r.st.Do(ctx, acked[0], func(ctx context.Context, tx store.Tx) error { return tx.OutboxDelete(ctx, acked) })
		if err != nil {
			return len(rows), failed, err
		}
		mPublished.Add(float64(len(acked)))
	}
	return len(rows), failed, nil
}

func (r *Relay) reapLoop(ctx context.Context) {
	tick := time.NewTicker(r.cfg.ReapInterval)
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
func (r *Relay) ReapOnce(ctx context.Context) (int, error) {
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
		var due []store.Command
		if err := r.st.Read(ctx, func(q store.Querier) error {
			var err error
			due, err = q.CommandsDue(ctx, now, cutoff, 500)
			return err
		}); err != nil {
			return total, err
		}
		if len(due) == 0 {
			return total, nil
		}
		full := len(due) == 500
		mReaped.Add(float64(len(due)))
		n, err := r.flow.Republish(ctx, due, now, cutoff)
		total += n
		if err != nil {
			return total, err
		}
		r.log.Info("reaper re-notified commands", "count", n)
		if !full {
			return total, nil
		}
	}
}
