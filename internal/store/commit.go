package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/backoff"
)

// Group-commit defaults.
const (
	// DefaultMaxBatch caps how many callers share one transaction. Larger
	// batches amortise the fsync further but make every caller wait for the
	// slowest one in the batch.
	DefaultMaxBatch = 128
	// DefaultCommitters is how many transactions may be open at once.
	// PostgreSQL benefits from a few; SQLite has one writer anyway.
	DefaultCommitters = 4
	// batchTimeout bounds one shared transaction, independent of any one
	// caller's context, so a cancelled caller never aborts the others.
	batchTimeout = 30 * time.Second
	// rollbackTimeout bounds the rollback of a failed transaction.
	rollbackTimeout = 10 * time.Second
	// maxAttempts is how often, in all, Do runs a function that keeps
	// failing with an error the driver classifies as transient (deadlock,
	// serialisation), waiting a jittered retryMinDelay, then twice that,
	// between attempts.
	maxAttempts   = 3
	retryMinDelay = 10 * time.Millisecond
	retryMaxDelay = 250 * time.Millisecond
	// optimisticPause is how long shared batches keep their savepoints
	// after one failed without them, so a burst of failing callers (a wave
	// of duplicate claims, say) does not make every batch run twice.
	optimisticPause = time.Second
)

var mBatchReruns = promauto.NewCounter(prometheus.CounterOpts{
	Name: "millrace_store_batch_reruns_total",
	Help: "Shared transactions run again with savepoints because a caller failed without them.",
})

// CallerSavepoint names the savepoint around each caller's work in a shared
// transaction. Callers run one after another, each savepoint released or
// rolled back before the next is taken, so one name serves them all, and
// drivers can prepare the three statements once.
const CallerSavepoint = "caller"

// Retryer is implemented by drivers that can tell transient errors apart.
type Retryer interface {
	Retryable(err error) bool
}

// Options configures a Store.
type Options struct {
	MaxBatch   int
	Committers int
	// AfterCommit, if set, receives the events the callers of a
	// transaction inserted once it committed, leaving out the work of a
	// caller rolled back to its savepoint. It runs on the committer after
	// the callers were answered, so it must not block: hand the events to
	// another goroutine (live.Publisher.Offer).
	AfterCommit func(events []Event)
}

// Store is the write path shared by the server. Do group-commits: callers
// that arrive while a transaction is being built join it (without savepoints
// until one of them fails; see runBatch). Callers are sharded by a key (the execution id) so that all
// writes for one execution go through one committer; that keeps row locks of
// one execution from being taken by two of our own transactions at once.
type Store struct {
	drv    Driver
	after  func([]Event) // Options.AfterCommit
	shards []chan *request
	max    int
	wg     sync.WaitGroup
	once   sync.Once
	stop   chan struct{}

	// mu orders queueing against Close: Do queues under the read lock and
	// only while closed is false, so once Close has set it, no request can
	// land in a shard after the committers' final drain.
	mu     sync.RWMutex
	closed bool

	// lastFailure is when (unix nanoseconds) a shared batch last failed
	// without savepoints; see optimistic.
	lastFailure atomic.Int64
}

type request struct {
	ctx  context.Context // the caller's: checked before fn starts, never passed to SQL
	fn   func(context.Context, Tx) error
	done chan error
	// evs are the events fn inserted in its latest run (only recorded
	// with Options.AfterCommit).
	evs []Event
}

// New starts the committers. Close stops them.
func New(drv Driver, opts Options) *Store {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Committers <= 0 {
		opts.Committers = DefaultCommitters
	}
	if drv.Name() == "sqlite" {
		opts.Committers = 1 // one writer: more committers only queue on the lock
	}
	s := &Store{drv: drv, after: opts.AfterCommit, max: opts.MaxBatch, stop: make(chan struct{})}
	for i := 0; i < opts.Committers; i++ {
		ch := make(chan *request, opts.MaxBatch*4)
		s.shards = append(s.shards, ch)
		s.wg.Add(1)
		go s.committer(ch)
	}
	return s
}

// Driver returns the underlying driver.
func (s *Store) Driver() Driver { return s.drv }

// Read runs read-only work outside the write path. It refuses to run
// inside a Do function: there the function holds a connection already,
// and a read that waits for a second one deadlocks the pool once every
// committer does the same; read through the function's Tx instead.
func (s *Store) Read(ctx context.Context, fn func(q Querier) error) error {
	if ctx.Value(inTxKey{}) != nil {
		return ErrReadInTx
	}
	return s.drv.Read(ctx, fn)
}

// inTxKey marks the context a Do function runs with (see Read).
type inTxKey struct{}

// ErrReadInTx is the answer of Read, or of a nested Do, inside a Do
// function: a programming error.
var ErrReadInTx = errors.New("store: Read or Do inside a Do function would wait for a second connection (or for its own committer) while holding one; use the function's Tx")

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("store is closed")

// Do runs fn inside a (possibly shared) transaction and returns once that
// transaction committed or fn's work was rolled back. fn must only use tx,
// with the context it is given (the batch's: a caller that gives up must
// not break a transaction shared with others), and must not keep tx. An
// error from fn rolls back fn's own work only; one the driver calls
// transient (see Retryer) runs fn again, after a short jittered wait.
func (s *Store) Do(ctx context.Context, key int64, fn func(context.Context, Tx) error) error {
	if ctx.Value(inTxKey{}) != nil {
		return ErrReadInTx // it would wait for a committer, perhaps its own
	}
	r, canRetry := s.drv.(Retryer)
	for attempt := 0; ; attempt++ {
		err := s.do(ctx, key, fn)
		if err == nil || !canRetry || !r.Retryable(err) || attempt+1 == maxAttempts {
			return err
		}
		// The transactions that collided are likely to be retried at the
		// same moment too: spread them out.
		if !backoff.Sleep(ctx, backoff.Delay(attempt, retryMinDelay, retryMaxDelay)) {
			return err
		}
	}
}

func (s *Store) do(ctx context.Context, key int64, fn func(context.Context, Tx) error) error {
	if key < 0 {
		key = -key
	}
	req := &request{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.shards[key%int64(len(s.shards))] <- req:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	// Once queued the work will be attempted; wait for its outcome even if
	// ctx ends, so a caller never reports failure for committed work.
	return <-req.done
}

// Close stops accepting work and waits for in-flight batches.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	s.wg.Wait()
	return s.drv.Close()
}

func (s *Store) committer(ch chan *request) {
	defer s.wg.Done()
	batch := make([]*request, 0, s.max)
	for {
		var first *request
		select {
		case first = <-ch:
		case <-s.stop:
			// Drain what is queued so no caller waits forever.
			for {
				select {
				case r := <-ch:
					r.done <- ErrClosed
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < s.max {
			select {
			case r := <-ch:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.runBatch(batch)
	}
}

func (s *Store) runBatch(batch []*request) {
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), inTxKey{}, true), batchTimeout)
	defer cancel()
	if len(batch) == 1 {
		s.runAlone(ctx, batch[0])
		return
	}
	if s.optimistic() {
		if s.runPlain(ctx, batch) {
			return
		}
		s.lastFailure.Store(time.Now().UnixNano())
		mBatchReruns.Inc()
	}
	s.runSavepoints(ctx, batch)
}

// begin starts a transaction for callers: their write-only rows go out as
// sets (see setTx), one statement per kind of row.
func (s *Store) begin(ctx context.Context) (Tx, error) {
	tx, err := s.drv.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return newSetTx(tx), nil
}

// optimistic reports whether the next shared batch should run without
// savepoints: no shared batch has failed in the last optimisticPause.
func (s *Store) optimistic() bool {
	return time.Since(time.Unix(0, s.lastFailure.Load())) > optimisticPause
}

// runPlain runs the batch in one transaction without savepoints: two
// statements and, on PostgreSQL, a round trip fewer per caller. The
// callers' write-only rows collect into one set, written once before the
// commit (or earlier, at the first statement that could see them): one
// statement per kind of row for the whole batch. It works
// while nobody fails; at the first caller error, or a failed commit, it
// rolls everything back, delivers nothing and returns false, and the batch
// runs again with savepoints. Callers that gave up before their turn are
// skipped as usual.
func (s *Store) runPlain(ctx context.Context, batch []*request) bool {
	tx, err := s.begin(ctx)
	if err != nil {
		return false
	}
	errs := make([]error, len(batch))
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err // nothing ran
			continue
		}
		if err := r.run(ctx, tx, s.after != nil); err != nil {
			rollback(ctx, tx)
			return false
		}
	}
	if err := tx.Commit(ctx); err != nil {
		rollback(ctx, tx)
		return false
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
	s.committed(batch, errs)
	return true
}

// runSavepoints runs the batch in one transaction, each caller inside its
// own savepoint, so one caller's error undoes only its own work. Each
// caller's rows go out as its own set at its Release, so a failing row
// (a duplicate key) fails that caller only.
func (s *Store) runSavepoints(ctx context.Context, batch []*request) {
	tx, err := s.begin(ctx)
	if err != nil {
		for _, r := range batch {
			r.done <- fmt.Errorf("begin transaction: %w", err)
		}
		return
	}
	errs := make([]error, len(batch))
	for i, r := range batch {
		sp := CallerSavepoint
		if err := tx.Savepoint(ctx, sp); err != nil {
			rollback(ctx, tx)
			s.fallback(ctx, batch)
			return
		}
		errs[i] = r.call(ctx, tx, s.after != nil)
		if errs[i] == nil {
			// A driver that queues inserts reports their errors here at
			// the latest: they are this caller's, undone like any other.
			errs[i] = tx.Release(ctx, sp)
			if errs[i] == nil {
				continue
			}
		}
		if err := tx.RollbackTo(ctx, sp); err != nil {
			rollback(ctx, tx)
			s.fallback(ctx, batch)
			return
		}
		if err := tx.Release(ctx, sp); err != nil {
			rollback(ctx, tx)
			s.fallback(ctx, batch)
			return
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// We cannot tell which caller broke the commit; retry each alone.
		s.fallback(ctx, batch)
		return
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
	s.committed(batch, errs)
}

// fallback runs each request in its own transaction after a shared one
// failed as a whole.
func (s *Store) fallback(ctx context.Context, batch []*request) {
	for _, r := range batch {
		s.runAlone(ctx, r)
	}
}

// runAlone runs r in its own transaction and answers it.
func (s *Store) runAlone(ctx context.Context, r *request) {
	err := s.runOne(ctx, r)
	r.done <- err
	if err == nil && s.after != nil && len(r.evs) > 0 {
		s.after(r.evs)
	}
}

// committed hands the events of the callers whose work committed (errs[i]
// is nil) to Options.AfterCommit.
func (s *Store) committed(batch []*request, errs []error) {
	if s.after == nil {
		return
	}
	var evs []Event
	for i, r := range batch {
		if errs[i] == nil {
			evs = append(evs, r.evs...)
		}
	}
	if len(evs) > 0 {
		s.after(evs)
	}
}

func (s *Store) runOne(ctx context.Context, r *request) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := r.call(ctx, tx, s.after != nil); err != nil {
		rollback(ctx, tx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		rollback(ctx, tx)
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// rollback ends tx after a failure. It has a deadline of its own: the
// failure may be ctx's deadline itself, and the transaction (with its
// connection and, on SQLite, the write lock) must end regardless.
func rollback(ctx context.Context, tx Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// call runs the request's fn unless its caller already gave up (then
// nothing ran, so reporting the caller's error is truthful).
func (r *request) call(ctx context.Context, tx Tx, record bool) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	return r.run(ctx, tx, record)
}

// run runs fn, recording the events it inserts when record is set. A run
// starts a fresh record: only the last run's work can commit.
func (r *request) run(ctx context.Context, tx Tx, record bool) error {
	r.evs = r.evs[:0]
	if record {
		tx = recorder{Tx: tx, r: r}
	}
	// fn gets the batch's context, but the caller's span (tracing on) so
	// that rows it writes (outbox.trace_parent) name the caller's trace.
	if sc := trace.SpanContextFromContext(r.ctx); sc.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, sc)
	}
	return r.fn(ctx, tx)
}

// recorder is the Tx a caller gets with Options.AfterCommit: it notes the
// events inserted.
type recorder struct {
	Tx
	r *request
}

func (t recorder) EventInsert(ctx context.Context, e Event) error {
	if err := t.Tx.EventInsert(ctx, e); err != nil {
		return err
	}
	t.r.evs = append(t.r.evs, e)
	return nil
}
