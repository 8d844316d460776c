package builds

import (
	"context"
	"errors"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// reapBatch is how many builds one pass looks at.
const reapBatch = 200

// Reap runs until ctx ends: each pass re-queues the builds whose worker
// stopped heartbeating (it died mid-build: another worker retries it while
// the previous active build keeps serving) and re-notifies queued builds
// whose notification was lost (a NATS restart with memory storage; on the
// in-process path, a server restart). backlog, if set, reports undelivered
// build jobs: while there are some, a queued build is most likely waiting
// its turn and is re-notified less eagerly.
func (s *Service) Reap(ctx context.Context, backlog func(context.Context) (int64, error)) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	lastGC := time.Now()
	for {
		if _, _, err := s.ReapOnce(ctx, backlog); err != nil && ctx.Err() == nil {
			s.log.Warn("build reaper pass failed; will retry", "err", err)
		}
		if time.Since(lastGC) >= gcEvery {
			lastGC = time.Now()
			if _, err := s.Collect(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("deleting the objects of replaced builds failed; will retry", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReapOnce runs one pass and returns how many builds it re-queued and
// re-notified.
func (s *Service) ReapOnce(ctx context.Context, backlog func(context.Context) (int64, error)) (requeued, renotified int, err error) {
	now := s.now()
	if requeued, err = s.RequeueStale(ctx, now); err != nil {
		return requeued, 0, err
	}
	wait := s.cfg.RedeliverAfter
	if backlog != nil && s.cfg.NATSEnabled {
		if n, err := backlog(ctx); err == nil && n > 0 {
			wait *= 10
		}
	}
	renotified, err = s.RenotifyLost(ctx, now, wait)
	return requeued, renotified, err
}

// RequeueStale puts back in the queue, notified again, the building builds
// whose last heartbeat is older than StaleWorkerAfter. Each is a
// compare-and-set: a worker that was only slow loses cleanly (its next
// heartbeat or report gets 409).
func (s *Service) RequeueStale(ctx context.Context, now time.Time) (int, error) {
	list, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildsBuildingBefore(ctx, now.Add(-s.cfg.StaleWorkerAfter), reapBatch)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range list {
		if s.runningHere(b.BuildUUID) {
			continue // ours, and alive: its heartbeat is only late
		}
		if s.requeue(ctx, b.BuildUUID, b.WorkerID, b.ClaimTokenID) {
			n++
			mReaped.WithLabelValues("requeued").Inc()
			s.log.Warn("re-queued a pre-aggregate build whose worker stopped heartbeating; the previous active build keeps serving",
				"build", b.BuildUUID, "worker", b.WorkerID, "model", b.Model, "pre_aggregate", b.PreAggregate)
		}
	}
	return n, nil
}

// requeue moves a build held by worker (under the claim of token) back to
// queued and notifies it again; false if it moved on meanwhile.
func (s *Service) requeue(ctx context.Context, uuid, worker string, token int64) bool {
	now := s.now()
	none := ""
	var upd store.PreAggBuild
	err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
		if _, err := holder(ctx, tx, uuid, worker, token); err != nil {
			return err
		}
		if _, err := tx.BuildTransition(ctx, uuid, []api.BuildStatus{api.BuildBuilding}, api.BuildQueued,
			store.BuildUpdate{WorkerID: &none, PublishedAt: &now}, now); err != nil {
			return err
		}
		var err error
		if upd, err = tx.BuildMarkRepublished(ctx, uuid, now); err != nil {
			return err
		}
		return s.enqueue(ctx, tx, uuid, republishID(upd), now)
	})
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, ErrNotHolder), errors.Is(err, ErrBuildNotFound):
		return false
	case err != nil:
		if ctx.Err() == nil {
			s.log.Error("re-queueing a build failed", "build", uuid, "err", err)
		}
		return false
	}
	if s.cfg.NATSEnabled {
		s.wake()
	} else if s.inProcess.Context().Err() == nil {
		s.startInProcess(uuid)
	}
	return true
}

// RenotifyLost re-sends the job of builds still queued after wait since
// their last notification (on the in-process path: starts them here unless
// they already wait here for a slot).
func (s *Service) RenotifyLost(ctx context.Context, now time.Time, wait time.Duration) (int, error) {
	list, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.PreAggBuild, error) {
		return q.BuildsQueuedBefore(ctx, now.Add(-wait), reapBatch)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range list {
		if s.runningHere(b.BuildUUID) {
			continue
		}
		sent := false
		err := s.st.Do(ctx, 0, func(ctx context.Context, tx store.Tx) error {
			sent = false // a retried transaction starts over
			cur, err := tx.BuildGet(ctx, b.BuildUUID)
			if err != nil || cur.Status != api.BuildQueued {
				return err // claimed meanwhile
			}
			upd, err := tx.BuildMarkRepublished(ctx, b.BuildUUID, now)
			if err != nil {
				return err
			}
			sent = true
			return s.enqueue(ctx, tx, b.BuildUUID, republishID(upd), now)
		})
		if err != nil {
			return n, err
		}
		if sent {
			n++
			mReaped.WithLabelValues("renotified").Inc()
			s.notified(b.BuildUUID)
		}
	}
	return n, nil
}
