package builds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preagg"
	"github.com/millrace/millrace/internal/semantic"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/warehouse"
)

// The refresh scheduler. Every pass looks at each declared pre-aggregate
// and decides, from its refresh state (store.PreAggState) and its builds,
// whether to queue one:
//   - "definition": it has no active or pending build for its current
//     definition hash (a new pre-aggregate, or a changed one); after a
//     failed one, only once RetryFailedAfter has passed;
//   - "cron": refresh.cron came due (UTC); a catch-up after downtime fires
//     once, not once per missed time;
//   - "key_sql": refresh.key_sql, polled every key_every, returned another
//     value than at its previous poll;
//   - "partition": cron or key_sql on a pre-aggregate with partition_by and
//     update_window, once it has an active build: only the partitions of
//     the update window are recomputed and the older ones kept.
//
// The new state and the build are written in one transaction with a
// compare-and-set on the state's version, so several servers sharing a
// database trigger each build once: the loser's pass changes nothing.

// Schedule runs the scheduler until ctx ends.
func (s *Service) Schedule(ctx context.Context) {
	if !s.cfg.Enabled {
		return
	}
	t := time.NewTicker(s.cfg.ScheduleInterval)
	defer t.Stop()
	for {
		if _, err := s.ScheduleOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("pre-aggregate scheduler pass failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ScheduleOnce runs one pass over every project and returns the builds it
// queued. A pre-aggregate that fails (its key_sql, its cron spec) does not
// stop the others; the first such error is returned.
func (s *Service) ScheduleOnce(ctx context.Context) ([]store.PreAggBuild, error) {
	if !s.cfg.Enabled {
		return nil, nil
	}
	projects, err := store.ReadValue(ctx, s.st, func(q store.Querier) ([]store.Project, error) { return q.ProjectList(ctx) })
	if err != nil {
		return nil, err
	}
	var queued []store.PreAggBuild
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for _, p := range projects {
		models, err := s.models(ctx, p.ProjectID)
		if err != nil {
			note(err)
			continue
		}
		for i := range models {
			m := &models[i]
			for j := range m.PreAggregates {
				pa := &m.PreAggregates[j]
				t := target{project: p, model: m, preagg: pa, hash: semantic.PreAggHash(m, pa)}
				b, err := s.scheduleOne(ctx, t)
				if err != nil {
					note(fmt.Errorf("pre-aggregate %s: %w", t.key(), err))
					continue
				}
				if b != nil {
					queued = append(queued, *b)
				}
			}
		}
		if ctx.Err() != nil {
			return queued, ctx.Err()
		}
	}
	return queued, first
}

// cronSchedule parses a five-field cron spec (or @hourly, @daily, ...),
// evaluated in UTC.
func cronSchedule(spec string) (cron.Schedule, error) {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, err
	}
	if ss, ok := sched.(*cron.SpecSchedule); ok && !strings.HasPrefix(spec, "CRON_TZ=") && !strings.HasPrefix(spec, "TZ=") {
		ss.Location = time.UTC
	}
	return sched, nil
}

// scheduleOne decides for one pre-aggregate and returns the build it
// queued, if any.
func (s *Service) scheduleOne(ctx context.Context, t target) (*store.PreAggBuild, error) {
	// The state is read before the builds: a pass that saw the state
	// before another server's trigger fails its compare-and-set, and one
	// that saw it after sees that server's build as pending.
	st, err := s.state(ctx, t)
	if err != nil {
		return nil, err
	}
	var list []store.PreAggBuild
	var active *store.PreAggBuild
	err = s.st.Read(ctx, func(q store.Querier) error {
		var err error
		if list, err = recent(ctx, q, t); err != nil {
			return err
		}
		active, err = activeOf(ctx, q, t)
		return err
	})
	if err != nil {
		return nil, err
	}
	now := s.now()
	next := st
	changed := false
	trigger := ""
	var problem error

	r := t.preagg.Refresh
	if r.Cron != "" {
		sched, err := cronSchedule(r.Cron)
		if err != nil {
			problem = fmt.Errorf("refresh.cron %q: %w", r.Cron, err)
		} else {
			n := sched.Next(now).UTC()
			switch {
			case st.NextCronAt == nil || st.NextCronAt.After(n): // first pass, or a new spec that fires sooner
				next.NextCronAt, changed = &n, true
			case !now.Before(*st.NextCronAt):
				next.NextCronAt, changed, trigger = &n, true, TriggerCron
			}
		}
	} else if st.NextCronAt != nil {
		next.NextCronAt, changed = nil, true
	}

	keyChanged := false
	if r.KeySQL != "" {
		every := time.Duration(r.KeyEvery)
		if every <= 0 {
			every = DefaultKeyEvery
		}
		if st.KeyCheckedAt == nil || now.Sub(*st.KeyCheckedAt) >= every {
			v, err := s.pollKey(ctx, t)
			switch {
			case err != nil:
				problem = fmt.Errorf("refresh.key_sql: %w", err)
				if st.KeyCheckedAt != nil { // keep the last value; poll again after key_every
					next.KeyCheckedAt, changed = &now, true
				}
			default:
				keyChanged = st.KeyCheckedAt != nil && v != st.KeyValue
				next.KeyValue, next.KeyCheckedAt, changed = v, &now, true
				if keyChanged && trigger == "" {
					trigger = TriggerKeySQL
				}
			}
		}
	}

	current := active != nil && active.DefHash == t.hash
	pending := pendingFor(list, t.hash)
	if !current && pending == nil && !s.failedRecently(list, t.hash, now) {
		trigger = TriggerDefinition
	}
	var rebuild []string
	if start, ok := preagg.WindowStart(t.preagg, now); ok && current && (trigger == TriggerCron || trigger == TriggerKeySQL) {
		trigger, rebuild = TriggerPartition, preagg.WindowKeys(t.preagg, start, now)
	}
	if trigger != "" && pending != nil {
		// A build of this definition is on its way. A key change it may
		// not have seen is kept unrecorded, so the next poll after it
		// finishes still sees the change.
		if keyChanged {
			next.KeyValue = st.KeyValue
		}
		trigger, rebuild = "", nil
	}
	if !changed && trigger == "" {
		return nil, problem
	}
	b, err := s.insert(ctx, t, st, next, trigger, rebuild)
	if errors.Is(err, store.ErrConflict) {
		return nil, problem // another server took this pass
	}
	if err != nil {
		return nil, err
	}
	if trigger == "" {
		return nil, problem
	}
	return &b, problem
}

// failedRecently reports whether the newest build of the definition hash
// failed less than RetryFailedAfter ago: the scheduler does not rebuild it
// on every pass.
func (s *Service) failedRecently(list []store.PreAggBuild, hash string, now time.Time) bool {
	for _, b := range list {
		if b.DefHash != hash {
			continue
		}
		return b.Status == api.BuildFailed && b.EndedAt != nil && now.Sub(*b.EndedAt) < s.cfg.RetryFailedAfter
	}
	return false
}

// pollKey evaluates t's refresh.key_sql on its project's warehouse.
func (s *Service) pollKey(ctx context.Context, t target) (string, error) {
	conn, err := s.projects.Connection(t.project)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.KeyTimeout)
	defer cancel()
	return s.keyFn(ctx, conn, t.preagg.Refresh.KeySQL)
}

// warehouseKey is the KeyFunc that asks the warehouse.
func warehouseKey(ctx context.Context, conn warehouse.Conn, sql string) (string, error) {
	drv, err := warehouse.Open(ctx, conn)
	if err != nil {
		return "", err
	}
	defer drv.Close()
	v, got := "", false
	err = drv.Query(ctx, sql, func([]warehouse.Column) error { return nil }, func(row []any) error {
		if !got && len(row) > 0 && row[0] != nil {
			v = fmt.Sprint(row[0])
		}
		got = true
		return nil
	})
	return v, err
}
