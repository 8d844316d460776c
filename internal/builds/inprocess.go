package builds

import (
	"context"
	"time"
)

// The in-process path (NATS_ENABLED=false): this server builds with its
// Builder, through the same claim, heartbeat and complete as a worker, so
// the states and the guarantees are the same. At most BuildConcurrency
// builds run at once; the others wait queued.

// recordTimeout bounds recording an outcome once the build's own context
// has ended.
const recordTimeout = 10 * time.Second

// startInProcess runs build uuid here unless it already runs here. Its
// goroutine belongs to s.inProcess, so Stop ends and waits for it.
func (s *Service) startInProcess(uuid string) {
	s.mu.Lock()
	if s.running[uuid] {
		s.mu.Unlock()
		return
	}
	s.running[uuid] = true
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		delete(s.running, uuid)
		s.mu.Unlock()
	}
	if !s.inProcess.Go("build "+uuid, func(ctx context.Context) error {
		defer done()
		s.runInProcess(ctx, uuid)
		return nil
	}) {
		done() // stopping: the build stays queued for the next run
	}
}

// runningHere reports whether build uuid runs (or waits for a slot) here.
func (s *Service) runningHere(uuid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[uuid]
}

func (s *Service) runInProcess(ctx context.Context, uuid string) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return // still queued: the next run (or another server) builds it
	}
	claimed, err := s.Claim(ctx, uuid, s.cfg.WorkerID, 0)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("in-process build not claimed", "build", uuid, "err", err)
		}
		return
	}
	// The outcome is recorded even as the server stops, within
	// recordTimeout of the build's end (not of its start: a build may run
	// for minutes).
	record := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RecordTimeout)
	}
	if s.builder == nil {
		rec, cancel := record()
		defer cancel()
		_, _ = s.Fail(rec, uuid, s.cfg.WorkerID, 0, "this server has no pre-aggregate engine to build with (NATS_ENABLED=false needs one); see the server log")
		return
	}
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.beat(bctx, stop, uuid)
	res, err := s.builder.Build(bctx, claimed)
	rec, cancel := record()
	defer cancel()
	switch {
	case ctx.Err() != nil:
		// The server is stopping: queued again, the next run builds it.
		s.requeue(rec, uuid, s.cfg.WorkerID, 0)
	case bctx.Err() != nil:
		// The heartbeat found the build taken away (re-queued): not ours to report.
	case err != nil:
		_, _ = s.Fail(rec, uuid, s.cfg.WorkerID, 0, err.Error())
	default:
		if _, err := s.Complete(rec, uuid, s.cfg.WorkerID, 0, res); err != nil {
			s.log.Error("recording an in-process build failed", "build", uuid, "err", err)
		}
	}
}

// beat heartbeats build uuid until ctx ends; when the build is no longer
// held here it cancels it.
func (s *Service) beat(ctx context.Context, cancel context.CancelFunc, uuid string) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Heartbeat(ctx, uuid, s.cfg.WorkerID, 0); err != nil && ctx.Err() == nil {
			if isKind(err, ErrNotHolder) || isKind(err, ErrBuildNotFound) {
				cancel()
				return
			}
			s.log.Warn("in-process build heartbeat failed; will retry", "build", uuid, "err", err)
		}
	}
}
