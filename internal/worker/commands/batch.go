package commands

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"
)

var mBatchItems = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "millrace_worker_batch_items",
	Help:    "Items per batch request the worker sent to the server, by kind (claim, report).",
	Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
}, []string{"kind"})

// Batching defaults.
const (
	// DefaultBatchSenders is how many batch requests of one kind (claims,
	// reports) a worker keeps in flight at once.
	DefaultBatchSenders = 4
	// DefaultMaxBatch caps the items of one batch request.
	DefaultMaxBatch = 64
	// batchRequestTimeout bounds one batch request; callers that need
	// retries (reports) retry around it.
	batchRequestTimeout = 30 * time.Second
)

// batcher turns single calls into batch requests. A call that arrives while
// every sender is busy waits and goes out with the others that arrived
// meanwhile, so an idle worker adds no latency (its call leaves at once,
// alone) and a busy one sends a request per batch, not per command: that is
// what the server's CPU goes to (docs/benchmarks.md).
type batcher[In, Out any] struct {
	kind string // metric label
	// send makes one request for ins. It returns one result and one error
	// per item, or a request-wide error that every item gets.
	send  func(ctx context.Context, ins []In) ([]Out, []error, error)
	calls chan *batchCall[In, Out]
	max   int
	stop  chan struct{}
	wg    sync.WaitGroup
	// waiting counts calls inside do: queued or in a request.
	waiting atomic.Int64
}

type batchCall[In, Out any] struct {
	// span is the caller's span (tracing on): a request's span is a child
	// of its first call's.
	span trace.SpanContext
	in   In
	out  Out
	err  error
	done chan struct{}
}

func newBatcher[In, Out any](kind string, senders, max int, send func(context.Context, []In) ([]Out, []error, error)) *batcher[In, Out] {
	b := &batcher[In, Out]{kind: kind, send: send, calls: make(chan *batchCall[In, Out]), max: max, stop: make(chan struct{})}
	for range senders {
		b.wg.Add(1)
		go b.loop()
	}
	return b
}

// do queues in and waits for its result. A request once sent is waited
// for even if ctx ends (it is bounded by batchRequestTimeout): its outcome,
// a claim granted say, must not be dropped.
func (b *batcher[In, Out]) do(ctx context.Context, in In) (Out, error) {
	c := &batchCall[In, Out]{in: in, span: trace.SpanContextFromContext(ctx), done: make(chan struct{})}
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	select {
	case b.calls <- c:
	case <-ctx.Done():
		var zero Out
		return zero, ctx.Err()
	case <-b.stop:
		var zero Out
		return zero, context.Canceled
	}
	<-c.done
	return c.out, c.err
}

// close stops the senders once they have finished their requests.
func (b *batcher[In, Out]) close() {
	close(b.stop)
	b.wg.Wait()
}

func (b *batcher[In, Out]) loop() {
	defer b.wg.Done()
	batch := make([]*batchCall[In, Out], 0, b.max)
	ins := make([]In, 0, b.max)
	for {
		batch, ins = batch[:0], ins[:0]
		select {
		case c := <-b.calls:
			batch = append(batch, c)
		case <-b.stop:
			return
		}
	fill:
		for len(batch) < b.max {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		for _, c := range batch {
			ins = append(ins, c.in)
		}
		mBatchItems.WithLabelValues(b.kind).Observe(float64(len(ins)))
		ctx, cancel := context.WithTimeout(context.Background(), batchRequestTimeout)
		if batch[0].span.IsValid() {
			ctx = trace.ContextWithSpanContext(ctx, batch[0].span)
		}
		outs, errs, err := b.send(ctx, ins)
		cancel()
		for i, c := range batch {
			switch {
			case err != nil:
				c.err = err
			default:
				c.out, c.err = outs[i], errs[i]
			}
			close(c.done)
		}
	}
}
