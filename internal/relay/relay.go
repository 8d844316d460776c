// Package relay is the bridge from the database to NATS. It drains the
// outbox (rows written in the same transaction as their command.issued
// event) to JetStream with Nats-Msg-Id set, and deletes a row only after
// JetStream acknowledged it. What to re-enqueue is the domain's business
// (flow's and query's reapers); the relay only publishes.
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
	// DefaultBatchSize is how many outbox rows one publish round sends.
	DefaultBatchSize = 512
	// DefaultPollInterval is how often the publisher looks at the outbox
	// when nobody woke it (rows written by another server process).
	DefaultPollInterval = 500 * time.Millisecond
	// minBackoff and maxBackoff bound the wait after a failed round.
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Publisher sends notifications; *bus.Conn implements it.
type Publisher interface {
	PublishBatch(ctx context.Context, msgs []bus.OutMsg) []error
}

// Config configures a Relay.
type Config struct {
	BatchSize    int
	PollInterval time.Duration
	// Tracer makes a publish span for each row that carries a traceparent
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
}

// Relay publishes the outbox.
type Relay struct {
	cfg  Config
	st   *store.Store
	pub  Publisher
	log  *slog.Logger
	wake chan struct{}
}

// New builds a relay. Call Wake after commits that add outbox rows: build
// the relay first and hand its Wake to the services that write them.
func New(cfg Config, st *store.Store, pub Publisher, log *slog.Logger) *Relay {
	cfg.defaults()
	return &Relay{cfg: cfg, st: st, pub: pub, log: log, wake: make(chan struct{}, 1)}
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
	mPublishErrors = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_outbox_publish_errors_total", Help: "Notifications JetStream did not acknowledge (kept in the outbox and retried)."})
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
			n, failed, err := r.publishOnce(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.Warn("outbox read failed; will retry", "err", err)
			}
			if failed == 0 && err == nil {
				bo.Reset()
				if n < r.cfg.BatchSize {
					break // drained
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

// publishOnce sends one batch; it returns rows sent, rows that failed.
func (r *Relay) publishOnce(ctx context.Context) (int, int, error) {
	rows, err := store.ReadValue(ctx, r.st, func(q store.Querier) ([]store.OutboxMsg, error) {
		return q.OutboxFetch(ctx, time.Now().UTC(), r.cfg.BatchSize)
	})
	if err != nil {
		return 0, 0, err
	}
	if len(rows) == 0 {
		return 0, 0, nil
	}
	msgs := make([]bus.OutMsg, len(rows))
	for i, row := range rows {
		msgs[i] = bus.OutMsg{Subject: row.Subject, MsgID: row.MsgID, Data: row.Payload}
	}
	spans := r.traceRows(ctx, rows, msgs)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	errs := r.pub.PublishBatch(pctx, msgs)
	cancel()
	endSpans(spans, errs)
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

// traceRows starts a producer span for each traced row, a child of the
// request that wrote it, and puts the span's traceparent on its message:
// the worker's spans become its children.
func (r *Relay) traceRows(ctx context.Context, rows []store.OutboxMsg, msgs []bus.OutMsg) []trace.Span {
	if r.cfg.Tracer == nil {
		return nil
	}
	spans := make([]trace.Span, len(rows))
	for i, row := range rows {
		if row.TraceParent == "" {
			continue
		}
		sctx, span := r.cfg.Tracer.Start(telemetry.WithTraceParent(ctx, row.TraceParent), "publish "+row.Subject,
			trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", row.Subject),
				attribute.String("messaging.message.id", row.MsgID)))
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
			span.SetStatus(codes.Error, "publish failed; the row stays in the outbox")
		}
		span.End()
	}
}
