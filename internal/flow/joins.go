package flow

import (
	"encoding/json"
	"fmt"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/engine"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/store"
)

// Joins (docs/playbooks.md, "Fan-out and joins"): an arc into a join does
// not start it; it records a join.arrived event. After every step's end the
// run starts each join that has an arrival and that no active branch can
// still reach (engine.Graph.JoinBlocker). Everything here is derived from
// durable rows (commands, loops, join.arrived events) under the execution's
// row lock, so two branches finishing at once, on one server or two, see
// each other, and a restarted server decides the same.

// graphFor returns the graph of pb, deriving it once per parsed playbook.
func (s *Service) graphFor(pb *playbook.Playbook) *engine.Graph {
	if g, ok := s.graphs.Load(pb); ok {
		return g.(*engine.Graph)
	}
	g := engine.NewGraph(pb)
	s.graphs.Store(pb, g)
	return g
}

// arrival is the payload of a join.arrived event.
type arrival struct {
	From  string `json:"from"`
	Round int    `json:"round"`
}

// readArrivals rebuilds r.arrived from the execution's join.arrived events.
func (r *run) readArrivals() error {
	evs, err := r.tx.EventListOfType(r.ctx, r.exec.ExecutionID, api.EvJoinArrived)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		var a arrival
		if err := json.Unmarshal(ev.Result, &a); err != nil {
			return fmt.Errorf("join.arrived event %d: %w", ev.EventID, err)
		}
		if cur, ok := r.arrived[ev.Step]; !ok || a.Round > cur {
			r.arrived[ev.Step] = a.Round
		}
	}
	return nil
}

// arrive records that from's arc into join fired.
func (r *run) arrive(join, from string) error {
	round := r.activity().starts[join]
	r.arrived[join] = round
	raw, err := json.Marshal(arrival{From: from, Round: round})
	if err != nil {
		return err
	}
	return r.s.event(r.ctx, r.tx, store.Event{ExecutionID: r.exec.ExecutionID, EventType: api.EvJoinArrived, Step: join,
		Status: "waiting", Result: raw}, r.now)
}

// activity is what the run's rows say about each step right now.
type activity struct {
	inFlight map[string]bool // a command not ended, or a running loop
	starts   map[string]int  // how many times the step was started
}

func (r *run) activity() activity {
	a := activity{inFlight: map[string]bool{}, starts: map[string]int{}}
	for _, c := range r.cmds {
		if !c.Status.Terminal() {
			a.inFlight[c.Step] = true
		}
		if c.LoopID == 0 && c.Retry == 0 {
			a.starts[c.Step]++ // a start; a retry continues the same run
		}
	}
	for _, l := range r.loops {
		a.starts[l.Step]++
		if l.Status == api.LoopRunning {
			a.inFlight[l.Step] = true
		}
	}
	return a
}

// waiting reports whether join has an arrival its latest start did not
// consume.
func (r *run) waiting(join string, a activity) bool {
	round, ok := r.arrived[join]
	return ok && round == a.starts[join]
}

// settleJoins starts every waiting join nothing holds back any more.
func (r *run) settleJoins() error {
	if len(r.arrived) == 0 {
		return nil // no arc ever reached a join: nothing to decide
	}
	joins := r.graph.Joins()
	for r.exec.Status == api.ExecRunning {
		a := r.activity()
		waiting := func(s string) bool { return r.waiting(s, a) }
		inFlight := func(s string) bool { return a.inFlight[s] }
		ready, first := "", ""
		for _, j := range joins {
			if !waiting(j) {
				continue
			}
			if first == "" {
				first = j
			}
			if r.graph.JoinBlocker(j, inFlight, waiting) == "" {
				ready = j
				break
			}
		}
		if ready == "" {
			// Joins on a cycle can hold each other back with nothing
			// running: then the first in playbook order goes, or they
			// would wait forever.
			if first == "" || len(a.inFlight) > 0 {
				return nil
			}
			ready = first
		}
		if err := r.startStep(r.pb.ByName[ready], r.scope); err != nil {
			return err
		}
		if r.activity().starts[ready] == a.starts[ready] {
			return nil // nothing started: the execution ended (a render error)
		}
	}
	return nil
}
