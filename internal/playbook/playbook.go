// Package playbook parses and validates NoETL-shaped playbooks.
//
// Parsing is strict: every unknown key, wrong type, dangling arc, unreachable
// step and cycle is reported as a Problem carrying the line and column of the
// offending YAML node, and all of them are reported at once. Keys that NoETL
// knows but Millrace does not implement (executor, step-level spec, case,
// sink, ...) are reported with what to write instead rather than silently
// ignored, so a playbook never runs with part of its meaning dropped.
package playbook

import (
	"regexp"
	"time"
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

// Loop modes.
const (
	LoopSequential = "sequential" // one iteration at a time, in order
	LoopParallel   = "parallel"   // up to MaxInFlight iterations at once
	// LoopCursor drains a work table (NoETL's cursor loop): MaxInFlight
	// commands each claim rows with Cursor.Claim and run the step's tasks
	// once per row, until a claim returns no rows.
	LoopCursor = "cursor"
)

// Loop placements (loop.spec.policy.exec, NoETL's). Every iteration is its
// own command either way; see docs/playbooks.md for what local means here.
const (
	LoopExecDistributed = "distributed"
	LoopExecLocal       = "local"
)

// DefaultIterator is the loop variable name when `iterator` is omitted.
const DefaultIterator = "item"

// DefaultMaxInFlight bounds a parallel loop that sets no max_in_flight, so a
// loop over a large list does not flood the workers (and the APIs they call).
const DefaultMaxInFlight = 16

// Policy actions (Rule.Do).
const (
	DoRetry    = "retry"
	DoFail     = "fail"
	DoContinue = "continue"
	// DoBreak stops a task list for this run (one loop iteration, or the
	// step), successfully; on a single tool it means DoContinue.
	DoBreak = "break"
	// DoJump goes on at the task named by Rule.To, in the same task list.
	DoJump = "jump"
)

// MaxTaskJumps bounds the jumps of one run of a task list: a `do: jump`
// whose condition never turns false fails the step with a clear error
// instead of running forever. Each jump is usually one page of a paginated
// API, so the bound sits far above any real page count.
const MaxTaskJumps = 10000

// IterScope is the template name (and set-target prefix) of a task list's
// per-run scope: iter.<iterator> and iter.index in a loop, plus whatever
// `set: {iter.x: ...}` assigns; it lives as long as the run of the list.
const IterScope = "iter"

// Retry defaults, filled in by the parser when a retry rule omits them.
const (
	DefaultRetryAttempts = 3
	DefaultRetryDelay    = time.Second
)

// Retry backoffs (Rule.Backoff).
const (
	BackoffFixed       = "fixed"
	BackoffExponential = "exponential"
	BackoffLinear      = "linear" // NoETL's: delay × attempt
	BackoffNone        = "none"   // NoETL's: retry at once, delay ignored
)

// KindWorkbook is the pseudo tool kind that calls a workbook entry by name;
// it is resolved at parse time and never reaches a worker.
const KindWorkbook = "workbook"

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
	Keychain   []KeychainEntry
	Steps      []*Step
	ByName     map[string]*Step
	Source     string
	// Entry is NoETL's executor.spec.entry_step: the step a run starts
	// with, overriding StartStepName; "" when not given.
	Entry string
	// Warnings are problems that do not stop the playbook (an unreachable
	// step), in line order; validate, register and run show them.
	Warnings Problems
}

// Metadata identifies a playbook in the catalog.
type Metadata struct {
	Name        string
	Path        string
	Description string
	Tags        []string
	// Labels are free-form NoETL labels (category: example, ...), kept for
	// the catalog; they do not change how a playbook runs.
	Labels map[string]string
	// Version is the author's own version string, kept as written; the
	// catalog still numbers each registration itself.
	Version string
}

// KeychainEntry binds a template name to a stored credential: templates
// read its fields as keychain.<Name>.<field>. Only the worker resolves it,
// so secrets never pass through the server's events.
type KeychainEntry struct {
	Name       string
	Credential string
	Kind       string // optional; informational (e.g. postgres, http)
	// Scope is NoETL's token lifetime (global, local, ...), kept as
	// written. It has no effect: a worker resolves the entry from the
	// stored credential for each command, so there is no token to share.
	Scope     string
	Line, Col int
}

// Step is one workflow step: a tool invocation (or a list of tasks run in
// order), optionally over a loop, and where to go next.
type Step struct {
	Name string
	Desc string
	// Tool is the step's single tool, including "kind", with `spec` and
	// `assert` removed (see Policy and Assert); values are still templates.
	// Nil when the step has a task list.
	Tool    map[string]any
	Policy  *Policy // the single tool's spec.policy; nil if none
	Assert  *Assert // the single tool's assert; nil if none
	Tasks   []Task  // the task list form of `tool`; nil for a single tool
	Loop    *Loop
	Set     map[string]any // step-level set, rendered with `result` bound
	Timeout time.Duration  // 0 = none
	// Pool is the worker pool the step's commands are routed to (a
	// Millrace extension, pool.go); "" is the default pool.
	Pool string
	Next *Next // nil for a terminal step
	Line int
	Col  int
}

// Task is one named tool of a step's task list. Later tasks read earlier
// tasks' results by task name.
type Task struct {
	Name   string
	Tool   map[string]any // includes "kind"; spec and assert removed
	Policy *Policy
	Assert *Assert
	Set    map[string]any // rendered with `output` bound after the task ran
	Line   int
	Col    int
}

// Loop runs a step once per item of In.
type Loop struct {
	In          string // a template that must render to a list
	Iterator    string // DefaultIterator when omitted
	Mode        string // LoopSequential (default) or LoopParallel
	MaxInFlight int    // 1 for sequential; DefaultMaxInFlight when unset
	// MaxInFlightExpr is a template (NoETL allows one) rendered to a whole
	// number when the loop starts, replacing MaxInFlight; "" when not given.
	MaxInFlightExpr string
	Exec            string // LoopExecDistributed (default) or LoopExecLocal, as written
	// Cursor is the work claim of a LoopCursor loop (In is then ""); nil
	// otherwise. Frame sizes its claims.
	Cursor    *Cursor
	Frame     Frame
	Line, Col int
}

// Policy decides what a tool's outcome means: retry, fail or continue.
// Rules are tried in order; the first whose When is true (or an Else) wins.
type Policy struct {
	Rules []Rule
	// Step and Field locate the policy for error messages, e.g. step
	// "fetch", field "tool.spec.policy" or "tool[load].spec.policy".
	Step, Field string
}

// Rule is one `when`/`then` (or `else`/`then`) of a policy.
type Rule struct {
	When      string // a Jinja condition; empty when Else
	Else      bool
	Do        string         // DoRetry, DoFail, DoContinue, DoBreak or DoJump
	To        string         // DoJump's target: a task of the same task list
	Attempts  int            // total runs allowed (retry only); DefaultRetryAttempts when omitted
	Backoff   string         // BackoffFixed (default), BackoffExponential, BackoffLinear or BackoffNone (retry only)
	Delay     time.Duration  // before the next run (retry only); DefaultRetryDelay when omitted
	Set       map[string]any // context values to assign when the rule fires
	Line, Col int
}

// Assert is a tool's contract (NoETL workbook shape): input keys that must
// be given and result keys it must return.
type Assert struct {
	Expects []string
	Returns []string
}

// Next says which steps follow a step once it completes.
type Next struct {
	Mode string // ModeExclusive (default) or ModeInclusive
	// OnNoMatch is NoETL's next.spec.on_no_match as written (complete,
	// quiet or ""). Both end the branch here; see docs/compat.md.
	OnNoMatch string
	Arcs      []Arc
}

// Arc is an edge to another step, taken when When (a Jinja expression,
// empty meaning always) is true.
type Arc struct {
	Step, When string
	Set        map[string]any // context values to assign when the arc fires
	Line, Col  int
}

// StartStep returns the step named "start" if present, else the first step.
func (p *Playbook) StartStep() *Step {
	if s, ok := p.ByName[p.Entry]; ok && p.Entry != "" {
		return s
	}
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
	identRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// setKeyRE is a `set` target: name, ctx.name, or a dotted path into one.
	setKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
	pathRE   = regexp.MustCompile(`^[A-Za-z0-9_./-]+$`)
)
