package commands

import (
	"context"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/engine"
)

// limitsKey carries the worker's template budgets to Execute, which is
// also called without a worker (tests, a child's inline run).
type limitsKey struct{}

// WithBudgets returns ctx carrying the template budgets of b for Execute.
func WithBudgets(ctx context.Context, b config.Budgets) context.Context {
	return context.WithValue(ctx, limitsKey{}, engine.Limits{Timeout: b.TemplateTimeout, MaxBytes: b.TemplateMaxBytes, MaxItems: b.LoopMaxItems})
}

// budgetFor bounds a command's renderings: the worker's limits (engine's
// defaults without them), and ctx, so a rendering stops when the command
// is cancelled, times out or the worker shuts down.
func budgetFor(ctx context.Context) *engine.Budget {
	l, _ := ctx.Value(limitsKey{}).(engine.Limits)
	return &engine.Budget{Ctx: ctx, Limits: l}
}
