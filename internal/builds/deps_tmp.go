package builds

// A stand-in for preagg.Plan until package preagg (A2) lands it.

import (
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

func defHash(m *semantic.Model, p *semantic.PreAggregate) string { return semantic.PreAggHash(m, p) }

func planOf(m *semantic.Model, p *semantic.PreAggregate, d semantic.Dialect, from *time.Time) api.BuildPlan {
	return api.BuildPlan{SQL: "select 1 /* preagg.Plan not landed yet */"}
}
