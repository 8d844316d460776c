// Package relay is the bridge from the database to NATS. It publishes two
// kinds of pending notification to JetStream with Nats-Msg-Id set: command
// notifications, a state of the command row (store.Notice: due since
// notify_at, cleared by one UPDATE per batch once JetStream acknowledged),
// and outbox rows (builds' and queries' messages, and commands' written
// before migration 9), deleted once acknowledged. What to re-notify is the
// domain's business (flow's and query's reapers); the relay only publishes.
//
// Every server runs a relay and they may publish the same pending
// notification at once: each derives the same Nats-Msg-Id from the row, so
// JetStream keeps one copy, and a copy after the duplicate window is
// answered 409 by the claim.
package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/backoff"
	"github.com/millrace/millrace/internal/bus"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/telemetry"
)

// Defaults for Config.
const (
	// DefaultBatchSize is how many command notifications, and how many
	// outbox rows, one publish round sends at most.
	DefaultBatchSize = 512
	// DefaultPollInterval is how often the publisher looks for pending
	// notifications when nobody woke it (written by another server
	// process, or a retry's backoff ending).
	DefaultPollInterval = 500 * time.Millisecond
	// minBackoff and maxBackoff bound the wait after a failed round.
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
	// DefaultParkAfter is how many failed publishes of one notification,
	// while others go through, park it (see strikes.go).
	DefaultParkAfter = 10
)

// Publisher sends notifications; *bus.Conn implements it.
type Publisher interface {
	PublishBatch(ctx context.Context, msgs []bus.OutMsg) []error
}

// Config configures a Relay.
type Config struct {
	BatchSize    int
	PollInterval time.Duration
	// Subject is the commands subject (NATS_SUBJECT, default
	// bus.DefaultSubject); a command routed to a pool goes to
	// bus.PoolSubject(Subject, pool).
	Subject string
	// ServerURL is put into every command notification: the API workers
	// call back (SERVER_API_URL). Any server of the deployment serves any
	// command, so the relay that publishes names its own.
	ServerURL string
	// ParkAfter is how many row-specific publish failures park a
	// notification (DefaultParkAfter when 0); RowBackoff is the first
	// wait before a failed one is tried again, doubling up to a minute
	// (DefaultRowBackoff when 0).
	ParkAfter  int
	RowBackoff time.Duration
	// Tracer makes a publish span for each message that carries a traceparent
	// and sends the span's as the message's traceparent header; nil
	// (tracing off) sends rows as they are.
	Tracer trace.Tracer
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Subject == "" {
		c.Subject = bus.DefaultSubject
	}
	if c.ParkAfter <= 0 {
		c.ParkAfter = DefaultParkAfter
	}
	if c.RowBackoff <= 0 {
		c.RowBackoff = DefaultRowBackoff
	}
}

// Relay publishes pending notifications.
type Relay struct {
	cfg  Config
	st   *store.Store
	pub  Publisher
	log  *slog.Logger
	wake chan struct{}
	// strikes is owned by the publish loop's goroutine (strikes.go).
	strikes *strikes
}

// New builds a relay. Call Wake after commits that make a notification
// pending (a command issued or re-notified, an outbox row): build
// the relay first and hand its Wake to the services that write them.
func New(cfg Config, st *store.Store, pub Publisher, log *slog.Logger) *Relay {
	cfg.defaults()
	return &Relay{cfg: cfg, st: st, pub: pub, log: log, wake: make(chan struct{}, 1), strikes: &strikes{m: map[strikeKey]*strike{}, parkAfter: cfg.ParkAfter}}
}

// Wake nudges the publisher; it never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends.
func (r *Relay) Run(ctx context.Context) { r.publishLoop(ctx) }

var (
	mPublished     = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_outbox_published_total", Help: "Notifications acknowledged by JetStream."})
	mPublishErrors = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_outbox_publish_errors_total", Help: "Notifications JetStream did not acknowledge (kept pending and retried)."})
)

func (r *Relay) publishLoop(ctx context.Context) {
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	bo := backoff.Backoff{Min: minBackoff, Max: maxBackoff}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
		for {
			n, res, err := r.publishOnce(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.Warn("reading or clearing pending notifications failed; will retry", "err", err)
			}
			// Only an outage (every publish of the round failed) or a
			// store error backs the whole relay off: a notification that
			// fails alone waits out its own backoff (strikes.go) and
			// never holds back the rows behind it.
			if !res.outage && err == nil {
				bo.Reset()
				if n < r.cfg.BatchSize || res.progress == 0 {
					break // drained, or only backed-off rows are left
				}
				continue
			}
			if !backoff.Sleep(ctx, bo.Next()) {
				return
			}
			break
		}
	}
}

// pending is one message of a round and where its pending state lives: an
// outbox row (outboxID) or a command row (notice).
type pending struct {
	msg         bus.OutMsg
	traceParent string
	outboxID    int64
	notice      store.Notified
}

// round is what one publish round did.
type round struct {
	progress int  // notifications published or cleared
	outage   bool // every publish failed: NATS, not a row, is the problem
}

// publishOnce sends one batch; it returns the larger of the command
// notifications and outbox rows read (a full batch means more may wait)
// and what the round did.
func (r *Relay) publishOnce(ctx context.Context) (int, round, error) {
	type due struct {
		notices []store.Notice
		rows    []store.OutboxMsg
	}
	now := time.Now().UTC()
	d, err := store.ReadValue(ctx, r.st, func(q store.Querier) (due, error) {
		var d due
		var err error
		if d.notices, err = q.CommandsToNotify(ctx, now, r.cfg.BatchSize); err != nil {
			return d, err
		}
		d.rows, err = q.OutboxFetch(ctx, now, r.cfg.BatchSize)
		return d, err
	})
	if err != nil {
		return 0, round{}, err
	}
	read := max(len(d.notices), len(d.rows))
	r.strikes.keep(d.notices, d.rows)
	if read == 0 {
		return 0, round{}, nil
	}
	items := make([]pending, 0, len(d.notices)+len(d.rows))
	// A command that ended before its notification went out needs none:
	// its pending state is cleared without publishing.
	var ended []store.Notified
	for _, n := range d.notices {
		mark := store.Notified{EventID: n.EventID, Publishes: n.Publishes}
		if n.Status.Terminal() {
			ended = append(ended, mark)
			continue
		}
		if r.strikes.waiting(noticeKey(n), now) {
			continue
		}
		note := bus.Notification{ExecutionID: n.ExecutionID, EventID: n.EventID, CommandID: n.CommandID, Step: n.Step, ServerURL: r.cfg.ServerURL}
		items = append(items, pending{
			msg:         bus.OutMsg{Subject: bus.PoolSubject(r.cfg.Subject, n.Pool), MsgID: bus.NotifyMsgID(n.CommandID, n.Publishes), Data: note.Encode()},
			traceParent: n.TraceParent, notice: mark,
		})
	}
	for _, row := range d.rows {
		if r.strikes.waiting(strikeKey{outboxID: row.ID}, now) {
			continue
		}
		items = append(items, pending{msg: bus.OutMsg{Subject: row.Subject, MsgID: row.MsgID, Data: row.Payload}, traceParent: row.TraceParent, outboxID: row.ID})
	}
	msgs := make([]bus.OutMsg, len(items))
	for i := range items {
		msgs[i] = items[i].msg
	}
	var errs []error
	if len(msgs) > 0 {
		spans := r.traceItems(ctx, items, msgs)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		errs = r.pub.PublishBatch(pctx, msgs)
		cancel()
		endSpans(spans, errs)
	}
	sent := ended
	var deleted []int64
	failed := 0
	var firstErr error
	outage := len(errs) > 0
	for _, err := range errs {
		if err == nil || poison(err) {
			outage = false
		}
	}
	for i, err := range errs {
		key := items[i].key()
		switch {
		case err != nil:
			failed++
			if firstErr == nil {
				firstErr = err
			}
			if !outage {
				r.strike(key, items[i].msg, err, now)
			}
		case items[i].outboxID != 0:
			r.strikes.clear(key)
			deleted = append(deleted, items[i].outboxID)
		default:
			r.strikes.clear(key)
			sent = append(sent, items[i].notice)
		}
	}
	res := round{progress: len(sent) + len(deleted), outage: outage}
	if failed > 0 {
		mPublishErrors.Add(float64(failed))
		r.log.Warn("publish to NATS failed; the notifications stay pending and will be retried", "failed", failed, "err", firstErr)
	}
	if len(sent) > 0 || len(deleted) > 0 {
		// Clearing is the last step: if we crash before it, the message is
		// sent again under the same Nats-Msg-Id and JetStream's duplicate
		// window or the claim's 409 absorbs it.
		var key int64
		if len(sent) > 0 {
			key = sent[0].EventID
		} else {
			key = deleted[0]
		}
		err := r.st.Do(ctx, key, func(ctx context.Context, tx store.Tx) error {
			if _, err := tx.CommandNotified(ctx, sent); err != nil {
				return err
			}
			return tx.OutboxDelete(ctx, deleted)
		})
		if err != nil {
			return read, res, err
		}
		mPublished.Add(float64(len(sent) - len(ended) + len(deleted)))
	}
	return read, res, nil
}

// traceItems starts a producer span for each traced message, a child of
// the request that asked for it, and puts the span's traceparent on the
// message: the worker's spans become its children.
func (r *Relay) traceItems(ctx context.Context, items []pending, msgs []bus.OutMsg) []trace.Span {
	if r.cfg.Tracer == nil {
		return nil
	}
	spans := make([]trace.Span, len(items))
	for i, it := range items {
		if it.traceParent == "" {
			continue
		}
		sctx, span := r.cfg.Tracer.Start(telemetry.WithTraceParent(ctx, it.traceParent), "publish "+it.msg.Subject,
			trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", it.msg.Subject),
				attribute.String("messaging.message.id", it.msg.MsgID)))
		spans[i] = span
		msgs[i].Header = nats.Header{telemetry.Header: []string{telemetry.TraceParent(sctx)}}
	}
	return spans
}

// endSpans ends the spans traceRows started with each message's outcome.
func endSpans(spans []trace.Span, errs []error) {
	for i, span := range spans {
		if span == nil {
			continue
		}
		if errs[i] != nil {
			span.RecordError(errs[i])
			span.SetStatus(codes.Error, "publish failed; the notification stays pending")
		}
		span.End()
	}
}
