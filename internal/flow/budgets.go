package flow

import (
	"context"
	"errors"

	"github.com/millrace/millrace/internal/engine"
)

// ErrBudget: a submit's workload (or a child's) exceeds a budget for
// user-supplied work; the message names the setting and its limit.
var ErrBudget = errors.New("budget exceeded")

// DefaultMaxWorkloadBytes is MaxWorkloadBytes when Config leaves it 0
// (config.DefaultMaxWorkloadBytes).
const DefaultMaxWorkloadBytes = 1 << 20

// checkWorkload refuses a workload (the playbook's merged with the
// payload, as JSON) larger than MILLRACE_MAX_WORKLOAD_BYTES: it is copied
// into every command's scope and every rendering, so its size multiplies.
func (s *Service) checkWorkload(wl []byte) error {
	limit := s.cfg.MaxWorkloadBytes
	if limit <= 0 {
		limit = DefaultMaxWorkloadBytes
	}
	if len(wl) > limit {
		return errorf(ErrBudget, "the workload with its payload is %d bytes as JSON, which exceeds MILLRACE_MAX_WORKLOAD_BYTES (%d bytes); pass large data by reference (a URL, a file, a table) or raise the setting", len(wl), limit)
	}
	return nil
}

// budget bounds the renderings of a run: the template limits, and ctx so
// a rendering stops when its request or the server ends.
func (s *Service) budget(ctx context.Context) *engine.Budget {
	return &engine.Budget{Ctx: ctx, Stop: s.cfg.Stopping, Limits: s.cfg.Templates}
}

// renderFailed handles a rendering error: a rendering cut short because
// its request or the process ended is not the playbook's fault, so the
// transaction is abandoned (and retried by whoever retries it); any other
// error, a budget hit included, fails the execution with its reason.
func (r *run) renderFailed(err error) error {
	if engine.IsCancelled(err) {
		return err
	}
	return r.fail(err.Error())
}
