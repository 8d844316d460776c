// Package retention deletes finished executions once they are older than
// MILLRACE_RETENTION, so the event store stops growing with history.
//
// A Service runs once when the server starts and then every Interval, in
// the server's lifecycle group. Each run, under a database-wide lock (one
// server at a time on a shared PostgreSQL):
//
//  1. on PostgreSQL, creates the event table's day partitions for today and
//     the next DaysAhead days;
//  2. deletes executions that ended before now-Period, Batch at a time, each
//     batch its own short transaction, until a batch finds nothing;
//  3. on PostgreSQL, drops the day partitions older than the cutoff whole,
//     first moving out the few events of executions still kept.
//
// The store does the work (store.Retention, store.Partitioner); this
// package decides when, counts and logs.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/store"
)

// Defaults for Config's zero fields.
const (
	DefaultInterval  = 5 * time.Minute
	DefaultBatch     = 1000
	DefaultDaysAhead = 3
	// DefaultSQLiteBatch is smaller: a batch holds SQLite's one write
	// lock, about 0.3 ms per execution of 10 events and 3 commands
	// (measured: 1,000 took 300 ms), and every writer waits for it.
	DefaultSQLiteBatch = 250
)

var (
	mDeleted = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_retention_deleted_executions_total",
		Help: "Finished executions deleted by retention (MILLRACE_RETENTION), with all their rows."})
	mDropped = promauto.NewCounter(prometheus.CounterOpts{Name: "millrace_retention_partitions_dropped_total",
		Help: "Event partitions (one UTC day each, PostgreSQL) dropped by retention."})
	mLastRun = promauto.NewGauge(prometheus.GaugeOpts{Name: "millrace_retention_last_run_timestamp_seconds",
		Help: "When this process last completed a retention run (Unix seconds); 0 if never."})
)

// Config tunes a Service.
type Config struct {
	// Period is MILLRACE_RETENTION: executions that ended longer ago are
	// deleted. 0 turns retention off (Run returns at once).
	Period time.Duration
	// Interval between runs (DefaultInterval if 0).
	Interval time.Duration
	// Batch is how many executions one transaction deletes (DefaultBatch
	// if 0): it bounds how long a batch holds locks, and on SQLite the
	// single writer.
	Batch int
	// DaysAhead is how many day partitions are created beyond today
	// (DefaultDaysAhead if 0): the days a failing retention can miss
	// before events start landing in the default partition.
	DaysAhead int
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Service runs retention. Make it with New.
type Service struct {
	cfg Config
	drv store.Driver
	log *slog.Logger
}

// New returns a Service for drv, which must implement store.Retention
// (both drivers do).
func New(cfg Config, drv store.Driver, log *slog.Logger) (*Service, error) {
	if cfg.Period < 0 {
		return nil, fmt.Errorf("MILLRACE_RETENTION=%s is negative: give a period such as 30d, or 0 to keep everything", cfg.Period)
	}
	if _, ok := drv.(store.Retention); !ok {
		return nil, fmt.Errorf("the %s store does not support retention; unset MILLRACE_RETENTION", drv.Name())
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
		if drv.Name() == "sqlite" {
			cfg.Batch = DefaultSQLiteBatch
		}
	}
	if cfg.DaysAhead <= 0 {
		cfg.DaysAhead = DefaultDaysAhead
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, drv: drv, log: log}, nil
}

// Result is what one run did.
type Result struct {
	// Locked is false when another process held the retention lock, and
	// the run did nothing.
	Locked bool
	Cutoff time.Time
	store.RetentionBatch
	Batches           int
	PartitionsCreated int
	store.PartitionDrop
	Took time.Duration
}

// Run runs once now and then every Interval until ctx ends. With Period 0
// it returns at once. A failed run is logged and retried at the next tick.
func (s *Service) Run(ctx context.Context) {
	if s.cfg.Period == 0 {
		return
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("retention run failed; retrying at the next interval", "error", err, "interval", s.cfg.Interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce is one run (see the package comment). It is safe to call from
// several processes at once: all but one find the lock taken.
func (s *Service) RunOnce(ctx context.Context) (Result, error) {
	start := s.cfg.Now()
	res := Result{Cutoff: start.Add(-s.cfg.Period).UTC()}
	if s.cfg.Period == 0 {
		return res, nil
	}
	r := s.drv.(store.Retention)
	release, ok, err := r.RetentionLock(ctx)
	if err != nil {
		return res, err
	}
	if !ok {
		s.log.Debug("retention: another server holds the lock; skipping this run")
		return res, nil
	}
	defer release()
	res.Locked = true
	part, partitioned := s.drv.(store.Partitioner)
	var errs []error
	if partitioned {
		// Partitions first: a run that fails later still keeps new events
		// out of the default partition.
		n, err := part.EnsurePartitions(ctx, start, s.cfg.DaysAhead)
		res.PartitionsCreated = n
		errs = append(errs, err)
	}
	for ctx.Err() == nil {
		t0 := time.Now()
		b, err := r.RetentionDelete(ctx, res.Cutoff, s.cfg.Batch)
		res.Batches++
		res.Executions += b.Executions
		res.Events += b.Events
		res.Commands += b.Commands
		res.Loops += b.Loops
		res.Blobs += b.Blobs
		mDeleted.Add(float64(b.Executions))
		if err != nil {
			errs = append(errs, err)
			break
		}
		if b.Executions == 0 {
			break
		}
		// Rest as long as the batch took: catching up on a long backlog
		// uses at most half of the database's (SQLite: the writer's) time.
		pause(ctx, time.Since(t0))
	}
	// Only after the deletes finished: the drop keeps the events of every
	// execution whose row is still there.
	if partitioned && ctx.Err() == nil && errors.Join(errs...) == nil {
		d, err := part.RetentionDropPartitions(ctx, res.Cutoff)
		res.PartitionDrop = d
		mDropped.Add(float64(d.Dropped))
		errs = append(errs, err)
	}
	res.Took = s.cfg.Now().Sub(start)
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	mLastRun.Set(float64(s.cfg.Now().Unix()))
	s.log.Info("retention run", "cutoff", res.Cutoff.Format(time.RFC3339), "executions_deleted", res.Executions,
		"events_deleted", res.Events, "commands_deleted", res.Commands, "loops_deleted", res.Loops, "blobs_deleted", res.Blobs,
		"batches", res.Batches, "partitions_created", res.PartitionsCreated, "partitions_dropped", res.Dropped,
		"events_moved", res.Moved, "partitions_skipped", res.Skipped, "took", res.Took.Round(time.Millisecond))
	return res, nil
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
