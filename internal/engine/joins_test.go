package engine

import (
	"reflect"
	"testing"

	"github.com/millrace/millrace/internal/playbook"
)

// joinPlaybook: start forks into a and b; b goes on to c; a and c lead to
// reduce; x leads back to start (a cycle) and only from reduce. solo has a
// single predecessor, so it is not a join.
const joinPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: j, path: tests/j}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs: [{step: a}, {step: b}]
  - step: a
    tool: {kind: noop}
    next: {arcs: [{step: reduce}, {step: reduce, when: "{{ false }}"}]}
  - step: b
    tool: {kind: noop}
    next: {arcs: [{step: c}]}
  - step: c
    tool: {kind: noop}
    next: {arcs: [{step: reduce}]}
  - step: reduce
    tool: {kind: noop}
    next: {arcs: [{step: x}, {step: solo}]}
  - step: x
    tool: {kind: noop}
    next: {arcs: [{step: start, when: "{{ false }}"}]}
  - step: solo
    tool: {kind: noop}
`

func TestGraphJoins(t *testing.T) {
	t.Parallel()
	pb, err := playbook.Parse("j.yaml", []byte(joinPlaybook), langKinds)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGraph(pb)
	// Two arcs from one step are one predecessor; being the entry does not
	// make start, which only x leads to, a join.
	if got := g.Joins(); !reflect.DeepEqual(got, []string{"reduce"}) {
		t.Errorf("Joins = %v, want [reduce]", got)
	}
	if got := g.Predecessors("reduce"); !reflect.DeepEqual(got, []string{"a", "c"}) {
		t.Errorf("Predecessors(reduce) = %v, want [a c]", got)
	}
	none := func(string) bool { return false }
	only := func(step string) func(string) bool { return func(s string) bool { return s == step } }
	cases := []struct {
		inFlight, waiting func(string) bool
		want              string
	}{
		{none, none, ""},
		{only("c"), none, "c"},           // a branch still running
		{only("b"), none, "b"},           // a branch that has not reached its last step
		{only("start"), none, "start"},   // upstream of the fork, through the cycle
		{only("reduce"), none, "reduce"}, // its own running round holds back the next
		{none, only("reduce"), ""},       // its own waiting does not
		{only("solo"), none, ""},         // cannot reach reduce
		{none, only("x"), "x"},           // another waiting step that can reach it
	}
	for i, c := range cases {
		if got := g.JoinBlocker("reduce", c.inFlight, c.waiting); got != c.want {
			t.Errorf("case %d: JoinBlocker = %q, want %q", i, got, c.want)
		}
	}
	if g.IsJoin("solo") || g.JoinBlocker("solo", func(string) bool { return true }, none) != "" {
		t.Error("solo, with one predecessor, is not a join and nothing holds it back")
	}
}

// Every step's end asks for the joins, also in a playbook without any:
// answering must cost no allocation (it built a new slice each time).
func TestGraphJoinsIsFree(t *testing.T) {
	pb, err := playbook.Parse("j.yaml", []byte(joinPlaybook), langKinds)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGraph(pb)
	if n := testing.AllocsPerRun(100, func() { _ = g.Joins() }); n != 0 {
		t.Fatalf("Joins allocates %v times per call, want 0", n)
	}
}
