// Package preagg decides whether a metric query can be answered from one
// of its model's pre-aggregates (Match), what a pre-aggregate's
// materialization computes on the warehouse (Plan), and how a matching
// query is rewritten onto that materialization in DuckDB (Rewrite). Pure:
// no I/O. A wrong hit returns wrong numbers, so every rule errs towards a
// miss: when in doubt, the warehouse answers.
package preagg

import (
	"fmt"
	"sort"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/semantic"
)

// View is the DuckDB view Rewrite's SQL reads (bus.PreAggView; preagg
// does not import bus to stay free of NATS).
const View = "preagg"

// ActiveBuild is the serving build of one pre-aggregate.
type ActiveBuild struct {
	BuildUUID string
	DefHash   string // semantic.PreAggHash of the definition it was built from
	Rows      int64
	BuiltAt   time.Time
	DataAsOf  time.Time
	Objects   []api.PartitionObject
}

// Decision is Match's answer: a hit names the pre-aggregate and its build;
// a miss carries the most specific reason.
type Decision struct {
	Hit    bool
	PreAgg *semantic.PreAggregate
	Build  ActiveBuild
	Reason *api.MissReason
}

// Meta is the decision as cacheMetadata.preAggregate.
func (d Decision) Meta() *api.PreAggregateMeta {
	m := &api.PreAggregateMeta{Hit: d.Hit, Reason: d.Reason}
	if d.Hit {
		m.Name = d.PreAgg.Name
		m.BuildUUID = d.Build.BuildUUID
		if !d.Build.BuiltAt.IsZero() {
			t := d.Build.BuiltAt
			m.BuiltAt = &t
		}
		if !d.Build.DataAsOf.IsZero() {
			t := d.Build.DataAsOf
			m.DataAsOf = &t
		}
	} else if d.Reason != nil {
		m.Name = d.Reason.PreAggregate
	}
	return m
}

// Miss is a decision that sends a query to the warehouse for a reason that
// is not about any pre-aggregate (BYPASSED, MATERIALIZATION_MISSING).
func Miss(code, message string) Decision {
	return Decision{Reason: &api.MissReason{Code: code, Message: message}}
}

// The per-candidate checks, in the order Match runs them. A candidate that
// fails at a later check came closer, so its reason is the more specific.
const (
	checkFields = iota // every field is stored in it
	checkGrain         // every time field is derivable from its grain
	checkExact         // non-additive metrics: same dimensions, same grain
	checkScope         // the query's filters imply its filters
	checkBuild         // an active build of the current definition
	checkFresh         // within refresh.max_staleness
	checksAll
)

// Match picks the pre-aggregate that answers r, or says why none can.
// active holds the active build of each pre-aggregate, by name. Among
// candidates that pass every check the smallest wins: fewest rows in its
// build, then fewest dimensions, then fewest metrics, then name. When none
// passes, the reason is the one of the candidate that passed the most
// checks (the first declared on a tie).
func Match(r *semantic.Resolved, active map[string]ActiveBuild, enabled bool, now time.Time) Decision {
	if !enabled {
		return Miss(api.PreAggMissDisabled, "pre-aggregates are disabled (PRE_AGGREGATES_ENABLED=false)")
	}
	m := r.Model
	if len(m.PreAggregates) == 0 {
		return Miss(api.PreAggMissNone, fmt.Sprintf("model %s declares no pre-aggregates", m.Name))
	}
	for _, f := range r.Metrics {
		if f.Custom != nil {
			d := Miss(api.PreAggMissCustomSQL, fmt.Sprintf("metric %s is a custom SQL metric of the query; pre-aggregates serve only the model's metrics", f.ID))
			d.Reason.FieldID = f.ID
			return d
		}
	}
	type passing struct {
		p     *semantic.PreAggregate
		build ActiveBuild
	}
	var hits []passing
	var best *api.MissReason
	bestPassed := -1
	for i := range m.PreAggregates {
		p := &m.PreAggregates[i]
		passed, reason := checkCandidate(r, p, active, now)
		if reason == nil {
			hits = append(hits, passing{p, active[p.Name]})
			continue
		}
		if passed > bestPassed {
			best, bestPassed = reason, passed
		}
	}
	if len(hits) == 0 {
		return Decision{Reason: best}
	}
	sort.SliceStable(hits, func(i, j int) bool {
		a, b := hits[i], hits[j]
		if a.build.Rows != b.build.Rows {
			return a.build.Rows < b.build.Rows
		}
		if da, db := storedDims(a.p), storedDims(b.p); da != db {
			return da < db
		}
		if len(a.p.Metrics) != len(b.p.Metrics) {
			return len(a.p.Metrics) < len(b.p.Metrics)
		}
		return a.p.Name < b.p.Name
	})
	return Decision{Hit: true, PreAgg: hits[0].p, Build: hits[0].build}
}

// storedDims counts a pre-aggregate's dimensions, its time dimension included.
func storedDims(p *semantic.PreAggregate) int {
	n := len(p.Dimensions)
	if p.TimeDimension != "" {
		n++
	}
	return n
}

// checkCandidate runs every check on p and returns how many passed and, on
// a failure, why.
func checkCandidate(r *semantic.Resolved, p *semantic.PreAggregate, active map[string]ActiveBuild, now time.Time) (int, *api.MissReason) {
	a := analyze(r, p)
	if a.reason != nil {
		return a.passed, a.reason
	}
	b, ok := active[p.Name]
	if !ok {
		return checkBuild, missFor(p, api.PreAggMissNoBuild, "", fmt.Sprintf("pre-aggregate %s has no active build", p.Name))
	}
	if h := defHash(r.Model, p); b.DefHash != h {
		return checkBuild, missFor(p, api.PreAggMissNoBuild, "", fmt.Sprintf("pre-aggregate %s's active build %s is of an older definition; a build of the current one is needed", p.Name, b.BuildUUID))
	}
	if max := time.Duration(p.Refresh.MaxStaleness); max > 0 {
		if age := now.Sub(b.DataAsOf); age > max {
			return checkFresh, missFor(p, api.PreAggMissStale, "", fmt.Sprintf("pre-aggregate %s's data is %s old (as of %s), more than its max_staleness %s", p.Name, age.Round(time.Second), b.DataAsOf.UTC().Format(time.RFC3339), max))
		}
	}
	return checksAll, nil
}

func missFor(p *semantic.PreAggregate, code, fieldID, msg string) *api.MissReason {
	return &api.MissReason{Code: code, Message: msg, PreAggregate: p.Name, FieldID: fieldID}
}
