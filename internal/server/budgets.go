package server

import (
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/engine"
)

// templateLimits are the rendering budgets of b for the flow engine.
func templateLimits(b config.Budgets) engine.Limits {
	return engine.Limits{Timeout: b.TemplateTimeout, MaxBytes: b.TemplateMaxBytes, MaxItems: b.LoopMaxItems}
}
