package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits are the budgets of template rendering (config.Budgets). A zero
// field takes its default, so a Scope without a Budget is still bounded.
type Limits struct {
	// Timeout bounds one rendering: a step's whole config, a loop's items,
	// an arc's condition (MILLRACE_TEMPLATE_TIMEOUT_MS).
	Timeout time.Duration
	// MaxBytes bounds what one rendering writes and any string it builds
	// (MILLRACE_TEMPLATE_MAX_BYTES).
	MaxBytes int
	// MaxItems bounds a loop step's items and a template's range() or list
	// concatenation (MILLRACE_LOOP_MAX_ITEMS).
	MaxItems int
}

// The defaults, equal to config's (engine does not import config).
const (
	DefaultTemplateTimeout  = 2 * time.Second
	DefaultTemplateMaxBytes = 4 << 20
	DefaultLoopMaxItems     = 100_000
)

// The settings the budget errors name.
const (
	SettingTemplateTimeout  = "MILLRACE_TEMPLATE_TIMEOUT_MS"
	SettingTemplateMaxBytes = "MILLRACE_TEMPLATE_MAX_BYTES"
	SettingLoopMaxItems     = "MILLRACE_LOOP_MAX_ITEMS"
)

// maxMacroDepth bounds nested macro calls: a macro that calls itself
// would otherwise grow the goroutine's stack until the runtime kills the
// whole process, which no recover can stop.
const maxMacroDepth = 100

func (l Limits) withDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultTemplateTimeout
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultTemplateMaxBytes
	}
	if l.MaxItems <= 0 {
		l.MaxItems = DefaultLoopMaxItems
	}
	return l
}

// Budget bounds the renderings of a Scope. Ctx ends a rendering early when
// the request that asked for it ends, Stop when the process is stopping;
// nil never does.
type Budget struct {
	Ctx    context.Context
	Stop   context.Context
	Limits Limits
}

// BudgetError is a budget that a playbook's templates or loop exceeded.
// It fails the execution (or command); Error names the setting and limit.
type BudgetError struct {
	Setting string // e.g. MILLRACE_TEMPLATE_MAX_BYTES
	Limit   int64
	Unit    string // "ms", "bytes", "items"
	What    string // what exceeded it, e.g. "template rendering"
}

func (e *BudgetError) Error() string {
	if e.Setting == "" {
		return fmt.Sprintf("%s exceed %d; a macro that calls itself must stop", e.What, e.Limit)
	}
	return fmt.Sprintf("%s exceeds %s (%d %s); simplify the template or raise the setting", e.What, e.Setting, e.Limit, e.Unit)
}

// CancelledError is a rendering stopped because its request or the process
// ended. It is not the playbook's fault: callers abort their transaction
// instead of failing the execution. It unwraps to the context's error.
type CancelledError struct{ Err error }

func (e *CancelledError) Error() string {
	return "template rendering cancelled: " + e.Err.Error()
}

func (e *CancelledError) Unwrap() error { return e.Err }

// IsCancelled reports whether err is a rendering cut short by its context.
func IsCancelled(err error) bool {
	var c *CancelledError
	return errors.As(err, &c)
}

// run is the budget state of one rendering call (RenderTool, LoopItems,
// EvalWhen, ...). A rendering runs on one goroutine, so no locks.
type run struct {
	limits   Limits
	done     <-chan struct{}
	ctx      context.Context
	stop     context.Context
	deadline time.Time
	written  int   // bytes produced by {{ }} and loop bodies, in any buffer
	depth    int   // nested macro calls
	err      error // the first budget error: authoritative over gonja's wrapping
}

func newRun(b *Budget) *run {
	r := &run{}
	if b != nil {
		r.limits = b.Limits
		if b.Ctx != nil {
			r.ctx, r.done = b.Ctx, b.Ctx.Done()
		}
		r.stop = b.Stop
	}
	r.limits = r.limits.withDefaults()
	r.deadline = time.Now().Add(r.limits.Timeout)
	return r
}

// check is called on every loop iteration and macro call: it stops a
// rendering past its time or once its context ended.
func (r *run) check() error {
	if r.err != nil {
		return r.err
	}
	select {
	case <-r.done:
		r.err = &CancelledError{Err: r.ctx.Err()}
		return r.err
	default:
	}
	if r.stop != nil && r.stop.Err() != nil {
		r.err = &CancelledError{Err: fmt.Errorf("the process is stopping: %w", r.stop.Err())}
		return r.err
	}
	if time.Now().After(r.deadline) {
		r.err = &BudgetError{Setting: SettingTemplateTimeout, Limit: r.limits.Timeout.Milliseconds(), Unit: "ms", What: "template rendering"}
	}
	return r.err
}

// bytes reports a string of n bytes about to be built or written.
func (r *run) bytes(n int) error {
	if r.err != nil {
		return r.err
	}
	if n > r.limits.MaxBytes || n < 0 {
		r.err = &BudgetError{Setting: SettingTemplateMaxBytes, Limit: int64(r.limits.MaxBytes), Unit: "bytes", What: "template output"}
	}
	return r.err
}

// produced counts n more bytes of output.
func (r *run) produced(n int) error {
	if n == 0 {
		return r.err
	}
	if err := r.bytes(r.written + n); err != nil {
		return err
	}
	r.written += n
	return nil
}

// items reports a list of n items about to be built.
func (r *run) items(n int, what string) error {
	if r.err != nil {
		return r.err
	}
	if n > r.limits.MaxItems || n < 0 {
		r.err = &BudgetError{Setting: SettingLoopMaxItems, Limit: int64(r.limits.MaxItems), Unit: "items", What: what}
	}
	return r.err
}

// fail returns the run's budget error if it has one, else err: gonja wraps
// and rephrases errors, so the budget's own words are kept here.
func (r *run) fail(err error) error {
	if r.err != nil {
		return r.err
	}
	return err
}

// limitedWriter is a rendering's output: past MaxBytes the write fails
// and gonja stops rendering.
type limitedWriter struct {
	b   strings.Builder
	run *run
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if err := w.run.bytes(w.b.Len() + len(p)); err != nil {
		return 0, err
	}
	return w.b.Write(p)
}

func (w *limitedWriter) WriteString(s string) (int, error) {
	if err := w.run.bytes(w.b.Len() + len(s)); err != nil {
		return 0, err
	}
	return w.b.WriteString(s)
}
