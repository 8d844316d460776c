package engine

import (
	"slices"

	"github.com/millrace/millrace/internal/playbook"
)

// Graph is the static shape of a playbook's arcs: who leads to whom. It
// decides joins (docs/playbooks.md, "Fan-out and joins").
//
// A join is a step that arcs from two or more distinct steps lead to
// (NoETL's planner calls it a reduce boundary). When an arc into a join
// fires, the join does not start at once: it starts when no step that can
// still lead to it is active (running, retrying, looping, or itself a join
// waiting for its own branches). A branch that was never taken, whose arc's
// `when` was false, or that ended elsewhere, is not active, so it never
// blocks; a join behind an exclusive choice starts as soon as the one live
// arc arrives.
type Graph struct {
	order []string            // steps in playbook order
	preds map[string][]string // distinct predecessors, playbook order
	// blockers holds, per join, the steps whose activity holds it back:
	// every step from which it can be reached without passing through it,
	// and the join itself (a new round waits for the running one).
	blockers map[string][]string
	joins    []string // the joins, playbook order
}

// NewGraph derives the graph of p.
func NewGraph(p *playbook.Playbook) *Graph {
	g := &Graph{preds: map[string][]string{}, blockers: map[string][]string{}}
	for _, st := range p.Steps {
		g.order = append(g.order, st.Name)
		if st.Next == nil {
			continue
		}
		for _, a := range st.Next.Arcs {
			if !slices.Contains(g.preds[a.Step], st.Name) {
				g.preds[a.Step] = append(g.preds[a.Step], st.Name)
			}
		}
	}
	for _, name := range g.order {
		if len(g.preds[name]) < 2 {
			continue
		}
		seen := map[string]bool{name: true}
		stack := slices.Clone(g.preds[name])
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[s] {
				continue
			}
			seen[s] = true
			stack = append(stack, g.preds[s]...)
		}
		var bl []string
		for _, s := range g.order { // playbook order: deterministic
			if seen[s] {
				bl = append(bl, s)
			}
		}
		g.blockers[name] = bl
		g.joins = append(g.joins, name)
	}
	return g
}

// IsJoin reports whether step has two or more distinct predecessors.
func (g *Graph) IsJoin(step string) bool {
	_, ok := g.blockers[step]
	return ok
}

// Joins lists the joins in playbook order. It is asked on every step's
// end, so it is derived once; callers must not modify it.
func (g *Graph) Joins() []string { return g.joins }

// Predecessors lists the distinct steps with an arc to step, in playbook
// order.
func (g *Graph) Predecessors(step string) []string { return g.preds[step] }

// JoinBlocker returns the first step, in playbook order, that holds join
// back, or "" when the join may start. A step holds it back while it has
// work in flight (inFlight: a command not yet ended, a running loop), and
// any other join that could lead to it while that join waits for its own
// branches (waiting). The join's own running round holds back the next one.
func (g *Graph) JoinBlocker(join string, inFlight, waiting func(step string) bool) string {
	for _, s := range g.blockers[join] {
		if inFlight(s) || (s != join && waiting(s)) {
			return s
		}
	}
	return ""
}
