// Package playbook parses and validates NoETL-shaped playbooks.
//
// Parsing is strict: every unknown key, wrong type, dangling arc, unreachable
// step and cycle is reported as a Problem carrying the line and column of the
// offending YAML node, and all of them are reported at once. Keys that NoETL
// knows but this version does not implement yet (loop, set, retry, ...) are
// reported as such rather than silently ignored, so a playbook never runs
// with part of its meaning dropped.
package playbook

import (
	"regexp"
)

// Accepted apiVersion values. NoETL playbooks run unchanged.
const (
	APIVersionNoETL    = "noetl.io/v2"
	APIVersionMillrace = "millrace.io/v1"
	KindPlaybook       = "Playbook"
)

// Arc evaluation modes of a step's next block.
const (
	ModeExclusive = "exclusive" // first arc whose when is true fires
	ModeInclusive = "inclusive" // every arc whose when is true fires
)

// StartStepName is the step a run begins with when present; otherwise the
// first step of the workflow is the start.
const StartStepName = "start"

// KindSet maps a tool kind to the keys its tool block may hold besides
// "kind". The tools package provides it at runtime.
type KindSet map[string][]string

// Playbook is a parsed, validated playbook.
type Playbook struct {
	APIVersion string
	Kind       string
	Metadata   Metadata
	Workload   map[string]any
	Steps      []*Step
	ByName     map[string]*Step
	Source     string
}

// Metadata identifies a playbook in the catalog.
type Metadata struct {
	Name        string
	Path        string
	Description string
	Tags        []string
}

// Step is one workflow step: a tool invocation and where to go next.
type Step struct {
	Name      string
	Desc      string
	Tool      map[string]any // includes "kind"; values are still templates
	Next      *Next          // nil for a terminal step
	Line, Col int
}

// Next says which steps follow a step once it completes.
type Next struct {
	Mode string // ModeExclusive (default) or ModeInclusive
	Arcs []Arc
}

// Arc is an edge to another step, taken when When (a Jinja expression,
// empty meaning always) is true.
type Arc struct {
	Step, When string
	Line, Col  int
}

// StartStep returns the step named "start" if present, else the first step.
func (p *Playbook) StartStep() *Step {
	if s, ok := p.ByName[StartStepName]; ok {
		return s
	}
	if len(p.Steps) == 0 {
		return nil
	}
	return p.Steps[0]
}

var (
	stepNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)
	pathRE     = regexp.MustCompile(`^[A-Za-z0-9_./-]+$`)
)
