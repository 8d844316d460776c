package builds

// Stand-ins for semantic.PreAggHash and preagg.Plan until packages
// semantic (A1) and preagg (A2) land them; replaced then.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

func defHash(m *semantic.Model, p *semantic.PreAggregate) string {
	q := *p
	q.Refresh, q.Pos, q.MaxRows = semantic.Refresh{}, semantic.Pos{}, 0
	b, _ := json.Marshal(struct {
		Table, SQL string
		Dims       []semantic.Dimension
		Metrics    []semantic.Metric
		P          semantic.PreAggregate
	}{m.Table, m.SQL, m.Dimensions, m.Metrics, q})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func planOf(m *semantic.Model, p *semantic.PreAggregate, d semantic.Dialect, from *time.Time) api.BuildPlan {
	return api.BuildPlan{SQL: "select 1 /* preagg.Plan not landed yet */"}
}
