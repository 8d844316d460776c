package query

import (
	"context"
	"errors"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// DefaultReapInterval is how often the query reaper runs.
const DefaultReapInterval = 2 * time.Second

// DefaultStaleWorkerAfter is how long an executing query may go without its
// worker's heartbeat (sent every keepaliveEvery) before it is re-queued.
const DefaultStaleWorkerAfter = 30 * time.Second

// Reap runs until ctx ends: it expires queries that waited longer than the
// queue timeout, and (NATS path) re-notifies queued queries whose
// notification was lost, e.g. when NATS restarted with memory storage.
// backlog, if set, reports undelivered messages: while there are some, a
// queued query is most likely just waiting its turn.
func (s *Service) Reap(ctx context.Context, interval time.Duration, backlog func(context.Context) (int64, error)) {
	if interval <= 0 {
		interval = DefaultReapInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastSweep := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, _, err := s.ReapOnce(ctx, backlog); err != nil && ctx.Err() == nil {
			s.log.Warn("query reaper pass failed; will retry", "err", err)
		}
		// Expired results are never read again (reads answer 410): remove
		// their files so the results directory does not grow forever.
		if time.Since(lastSweep) >= sweepEvery {
			lastSweep = time.Now()
			if n, err := s.results.Sweep(s.now().Add(-s.cfg.CacheStale)); err != nil {
				s.log.Warn("sweeping expired results failed", "err", err)
			} else if n > 0 {
				s.log.Info("removed expired query results", "count", n)
			}
		}
	}
}

// sweepEvery is how often expired result files are removed.
const sweepEvery = time.Minute

// reapBatch is how many queries one pass of the reaper looks at.
const reapBatch = 500

// ReapOnce runs the reaper's three passes, in order, and returns how many
// queries it expired and re-notified. backlog, if set, reports undelivered
// query jobs (see RenotifyLost).
func (s *Service) ReapOnce(ctx context.Context, backlog func(context.Context) (int64, error)) (expired, renotified int, err error) {
	now := s.now()
	if expired, err = s.ExpireQueued(ctx, now); err != nil || !s.cfg.NATSEnabled {
		return expired, 0, err
	}
	defer func() {
		if renotified > 0 {
			mRenotified.Add(float64(renotified))
			s.wake()
		}
	}()
	if renotified, err = s.RequeueStale(ctx, now); err != nil {
		return expired, renotified, err
	}
	n, err := s.RenotifyLost(ctx, now, s.lostAfter(ctx, backlog))
	return expired, renotified + n, err
}

// ExpireQueued ends queries that waited in the queue longer than the queue
// timeout (status expired; they are not run). It returns how many.
func (s *Service) ExpireQueued(ctx context.Context, now time.Time) (int, error) {
	old, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Query, error) {
		return q.QueriesCreatedBefore(ctx, []api.QueryStatus{api.QueryQueued}, now.Add(-s.cfg.QueueTimeout), reapBatch)
	})
	if err != nil {
		return 0, err
	}
	expired := 0
	for _, q := range old {
		if q.StartedAt != nil {
			continue // re-queued after its worker died: a re-run, not a queue wait
		}
		if s.finish(ctx, q.QueryUUID, []api.QueryStatus{api.QueryQueued}, api.QueryExpired, store.QueryUpdate{}) {
			expired++
		}
	}
	return expired, nil
}

// RequeueStale puts back in the queue, and notifies again, the executing
// queries whose worker stopped heartbeating (it died mid-query). Each is a
// compare-and-set, so a late heartbeat or result from a worker that was only
// slow loses cleanly. It returns how many it re-queued; the caller wakes the
// relay.
func (s *Service) RequeueStale(ctx context.Context, now time.Time) (int, error) {
	running, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Query, error) {
		return q.QueriesCreatedBefore(ctx, []api.QueryStatus{api.QueryExecuting}, now, reapBatch)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range running {
		if q.PublishedAt != nil && now.Sub(*q.PublishedAt) < s.cfg.StaleWorkerAfter {
			continue
		}
		none := ""
		err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			cur, err := tx.QueryTransition(ctx, q.QueryUUID, []api.QueryStatus{api.QueryExecuting}, api.QueryQueued,
				store.QueryUpdate{WorkerID: &none, PublishedAt: &now}, now)
			if err != nil {
				return err
			}
			upd, err := tx.QueryMarkRepublished(ctx, cur.QueryUUID, now)
			if err != nil {
				return err
			}
			return s.enqueue(ctx, tx, upd, republishID(upd), now)
		})
		switch {
		case errors.Is(err, store.ErrConflict):
			// It moved on meanwhile (a heartbeat, a result, a cancel).
		case err != nil:
			return n, err
		default:
			n++
			s.log.Warn("re-queued a query whose worker stopped heartbeating", "query", q.QueryUUID, "worker", q.WorkerID)
		}
	}
	return n, nil
}

// lostAfter is how long a queued query waits before RenotifyLost resends
// its job.
func (s *Service) lostAfter(ctx context.Context, backlog func(context.Context) (int64, error)) time.Duration {
	wait := s.cfg.RedeliverAfter
	if backlog != nil {
		if n, err := backlog(ctx); err == nil && n > 0 {
			// Queued work is probably just waiting its turn; but a lost job
			// must still be re-sent well before the queue timeout expires it.
			wait = min(wait*10, s.cfg.QueueTimeout/3)
		}
	}
	return wait
}

// RenotifyLost re-sends the job of queries still queued after wait: their
// notification was lost, e.g. when NATS restarted with memory storage. It
// returns how many it re-notified (the caller wakes the relay).
func (s *Service) RenotifyLost(ctx context.Context, now time.Time, wait time.Duration) (int, error) {
	lost, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Query, error) {
		return q.QueriesQueuedBefore(ctx, now.Add(-wait), reapBatch)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range lost {
		sent := false
		err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			sent = false // a retried transaction starts over
			cur, err := tx.QueryGet(ctx, q.QueryUUID)
			if err != nil || cur.Status != api.QueryQueued {
				return err // claimed or cancelled meanwhile
			}
			upd, err := tx.QueryMarkRepublished(ctx, q.QueryUUID, now)
			if err != nil {
				return err
			}
			sent = true
			return s.enqueue(ctx, tx, upd, republishID(upd), now)
		})
		if err != nil {
			return n, err
		}
		if sent {
			n++
		}
	}
	return n, nil
}

func republishID(q store.Query) string {
	return q.QueryUUID + "#" + itoa(q.Publishes)
}
