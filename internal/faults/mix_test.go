package faults

import (
	"context"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/client"
)

// The mix of the matrix: single steps, 5-step chains, parallel loops and
// child playbooks. Steps that sleep {{ pause }} keep commands running long
// enough for a fault to land mid-command.
const (
	singlePlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: single
  path: faults/single
workload:
  pause: 0.1
workflow:
  - step: start
    tool:
      kind: shell
      cmds:
        - "sleep {{ pause }}; echo single-{{ execution_id }}"
`

	chainPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: chain
  path: faults/chain
workload:
  pause: 0.1
workflow:
  - step: start
    tool: {kind: noop, result: {n: 1}}
    next: {arcs: [{step: two}]}
  - step: two
    tool: {kind: noop, result: {n: "{{ start.n + 1 }}"}}
    next: {arcs: [{step: three}]}
  - step: three
    tool:
      kind: shell
      cmds:
        - "sleep {{ pause }}; echo 3"
    next: {arcs: [{step: four}]}
  - step: four
    tool: {kind: noop, result: {n: 4}}
    next: {arcs: [{step: five}]}
  - step: five
    tool: {kind: noop, result: {n: "{{ four.n + 1 }}"}}
`

	loopPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: loop
  path: faults/loop
workload:
  items: [a, b, c, d]
  pause: 0.1
workflow:
  - step: start
    loop:
      in: "{{ items }}"
      iterator: item
      spec:
        mode: parallel
        max_in_flight: 4
    tool:
      kind: shell
      cmds:
        - "sleep {{ pause }}; echo {{ loop.index0 }}-{{ item }}"
    next:
      arcs:
        - step: summary
          when: "{{ event.name == 'loop.done' }}"
  - step: summary
    tool:
      kind: noop
      result:
        count: "{{ start | length }}"
`

	childPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: child
  path: faults/child
workload:
  n: 1
workflow:
  - step: start
    tool: {kind: noop, result: {doubled: "{{ n * 2 }}"}}
    next: {arcs: [{step: finish}]}
  - step: finish
    tool: {kind: noop, result: {done: true}}
`

	parentPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: parent
  path: faults/parent
workflow:
  - step: start
    tool:
      kind: playbook
      path: faults/child
      input:
        n: 21
    next: {arcs: [{step: after}]}
  - step: after
    tool: {kind: noop, result: {child: "{{ start }}"}}
`
)

// mix is the registered paths; item i of the mix is paths[i % len].
// A parent is one in eight, so at CI size (500) the parents waiting on
// their children hold far fewer slots than the workers have.
type mix struct{ paths []string }

func registerMix(t *testing.T, api *client.Client) mix {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	byName := map[string]string{}
	for _, pb := range []struct{ name, content string }{
		{"single", singlePlaybook}, {"chain", chainPlaybook}, {"loop", loopPlaybook},
		{"child", childPlaybook}, {"parent", parentPlaybook},
	} {
		r, err := api.Register(ctx, pb.content)
		if err != nil {
			t.Fatalf("register %s: %v", pb.name, err)
		}
		byName[pb.name] = r.Path
	}
	s, c, l, p := byName["single"], byName["chain"], byName["loop"], byName["parent"]
	return mix{paths: []string{s, c, l, s, c, l, p, l}}
}

// item is the i-th execution's playbook path and payload.
func (m mix) item(i int) (string, map[string]any) {
	return m.paths[i%len(m.paths)], nil
}
