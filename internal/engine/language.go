package engine

import (
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/playbook"
	"github.com/millrace/millrace/internal/tools"
)

// MaxRetryDelay caps a retry's backoff: an exponential delay past it would
// leave an execution idle for hours on what is almost always a typo.
const MaxRetryDelay = 10 * time.Minute

// Output statuses bound as output.status while a policy is evaluated.
const (
	OutputSuccess = "success"
	OutputError   = "error"
)

// Events bound as event.name while arcs are evaluated: NoETL playbooks
// write `when: "{{ event.name == 'loop.done' }}"`. Arcs fire once a step is
// over, so the name says how it ended.
const (
	EventCallDone = "call.done"    // a step without a loop finished
	EventLoopDone = api.EvLoopDone // every iteration of a loop finished
)

// keychainRE finds templates that read the keychain; only the worker can
// render them, because only it holds the secrets.
var keychainRE = regexp.MustCompile(`\bkeychain\b`)

func readsKeychain(s string) bool {
	return (strings.Contains(s, "{{") || strings.Contains(s, "{%")) && keychainRE.MatchString(s)
}

// RenderTool renders every tool field of step except "kind", strictly.
// Errors are *TemplateError naming the step and the field's dotted path.
//
// A string that reads `keychain` is left verbatim for the worker
// (RenderAtWorker), so secrets never enter a command or an event. A step
// with a task list returns nil, nil: its tasks read each other's results,
// so the worker renders them one by one.
func RenderTool(step *playbook.Step, s Scope) (map[string]any, error) {
	if step.Tool == nil && len(step.Tasks) > 0 {
		return nil, nil
	}
	return renderTool(step, &lazyVars{scope: s})
}

// RenderAtWorker renders every template in v with keychain bound as
// `keychain` (name -> credential fields). Errors are *TemplateError whose
// Field is the path inside v; the caller sets Step (and prefixes Field with
// e.g. tool[task]) before reporting.
//
// v must be template text from the playbook (a step's Tool, a task's Tool,
// or RenderTool's verbatim keychain strings), never data a tool returned:
// rendering data again would let a response that contains {{ keychain.x }}
// read a secret.
func RenderAtWorker(v any, s Scope, keychain map[string]any) (any, error) {
	if keychain == nil {
		keychain = map[string]any{}
	}
	if cfg, ok := v.(map[string]any); ok && cfg[tools.PythonContextKey] != nil {
		// A bound context is data, never rendered again: bound afresh below.
		cfg = maps.Clone(cfg)
		delete(cfg, tools.PythonContextKey)
		v = cfg
	}
	vars := &lazyVars{scope: s.With("keychain", keychain)}
	cfg, ok := v.(map[string]any)
	if !ok || cfg["kind"] != "python" || cfg["input"] == nil {
		out, err := renderValue(v, vars, "", false)
		if cfg, ok := out.(map[string]any); ok && err == nil {
			bindPythonContext(cfg, vars)
		}
		return out, err
	}
	// A python tool's input keeps a whole loop result's identity (markingLoops).
	rest := maps.Clone(cfg)
	delete(rest, "input")
	out, err := renderValue(rest, vars, "", false)
	if err != nil {
		return nil, err
	}
	input, err := renderValue(cfg["input"], vars.markingLoops(), "input", false)
	if err != nil {
		return nil, err
	}
	m := out.(map[string]any)
	m["input"] = input
	bindPythonContext(m, vars)
	return m, nil
}

// With returns a copy of s with name bound in Extra (highest precedence).
// s itself is not modified.
func (s Scope) With(name string, v any) Scope {
	extra := make(map[string]any, len(s.Extra)+1)
	maps.Copy(extra, s.Extra)
	extra[name] = v
	s.Extra = extra
	return s
}

// WithResult is With for an earlier task's result in a task list: it reads
// as a step's result does (wrapResult), so a task list's `fetch_posts.data`
// is an http task's body, as NoETL's fixtures read it.
func (s Scope) WithResult(name string, v any) Scope {
	return s.With(name, taskResult{v})
}

// taskResult marks an Extra value that Vars presents as a result.
type taskResult struct{ v any }

// LoopItems renders step's loop.in to the list of items to iterate.
func LoopItems(step *playbook.Step, s Scope) ([]any, error) {
	if step.Loop == nil {
		return nil, fmt.Errorf("step %q has no loop", step.Name)
	}
	vars := &lazyVars{scope: s}
	v, err := render(step.Loop.In, vars, true)
	if err != nil {
		return nil, templateError(step.Name, "loop.in", err)
	}
	items, ok := v.([]any)
	if !ok {
		return nil, &TemplateError{Step: step.Name, Field: "loop.in", Reason: fmt.Sprintf(
			"must render to a list, got %s; write e.g. {{ users }} where users is a list, or {{ x | default([]) }}", typeName(v))}
	}
	if max := vars.budget().limits.MaxItems; len(items) > max {
		err := &BudgetError{Setting: SettingLoopMaxItems, Limit: int64(max), Unit: "items", What: fmt.Sprintf("loop over %d items", len(items))}
		return nil, templateError(step.Name, "loop.in", err)
	}
	return items, nil
}

// LoopMaxInFlight renders a parallel loop's templated max_in_flight (NoETL
// allows one, rendered when the loop starts) to a whole number >= 1.
func LoopMaxInFlight(step *playbook.Step, s Scope) (int, error) {
	v, err := render(step.Loop.MaxInFlightExpr, &lazyVars{scope: s}, true)
	if err != nil {
		return 0, templateError(step.Name, "loop.spec.max_in_flight", err)
	}
	var n float64
	switch t := v.(type) {
	case int:
		n = float64(t)
	case int64:
		n = float64(t)
	case float64:
		n = t
	case string:
		if _, err := fmt.Sscan(strings.TrimSpace(t), &n); err != nil {
			n = 0
		}
	}
	if n < 1 || n != math.Trunc(n) || n > math.MaxInt32 {
		return 0, &TemplateError{Step: step.Name, Field: "loop.spec.max_in_flight", Reason: fmt.Sprintf(
			"must render to a whole number >= 1, got %s", typeName(v))}
	}
	return int(n), nil
}

func typeName(v any) string {
	switch t := v.(type) {
	case nil:
		return "none"
	case map[string]any:
		return "a mapping"
	case string:
		if len(t) > 40 {
			t = t[:40] + "..."
		}
		return fmt.Sprintf("the string %q", t)
	case bool:
		return "a boolean"
	case int, int64, float64:
		return fmt.Sprintf("the number %v", t)
	}
	return fmt.Sprintf("%T", v)
}

// IterationScope is s for iteration index (0-based) of step's loop: the
// iterator name bound to the item, loop = {index (1-based), index0, first,
// last, length}, iter = {<iterator>: item, index (0-based)} and NoETL's
// loop_index (0-based).
func IterationScope(s Scope, step *playbook.Step, items []any, index int) Scope {
	if step.Loop == nil || step.Loop.Mode == playbook.LoopCursor {
		return s // a cursor loop's items are its drain slots; the worker binds each row (RowScope)
	}
	var item any
	if index >= 0 && index < len(items) {
		item = items[index]
	}
	extra := make(map[string]any, len(s.Extra)+4)
	maps.Copy(extra, s.Extra)
	extra[step.Loop.Iterator] = item
	extra["loop"] = map[string]any{
		"index": index + 1, "index0": index, "first": index == 0, "last": index == len(items)-1, "length": len(items),
	}
	extra["iter"] = map[string]any{step.Loop.Iterator: item, "index": index}
	extra["loop_index"] = index // NoETL's name for the 0-based index
	s.Extra = extra
	return s
}

// RowScope is the scope of one run of a cursor loop's tasks: the claimed
// row (or, for a whole frame, the list of rows) as <iterator> and
// iter.<iterator>, iter.index its 0-based position among the rows this
// drain slot claimed, and NoETL's iter._worker_slot_id, _frame_index and
// _frame_row_index.
func RowScope(s Scope, iterator string, row any, index, slot, frame, frameRow int) Scope {
	extra := make(map[string]any, len(s.Extra)+2)
	maps.Copy(extra, s.Extra)
	extra[iterator] = row
	extra[playbook.IterScope] = map[string]any{iterator: row, "index": index, "_index": index,
		"_worker_slot_id": slot, "_frame_index": frame, "_frame_row_index": frameRow}
	s.Extra = extra
	return s
}

// Outcome is how one run of a tool ended, as a policy sees it.
type Outcome struct {
	Status    OutcomeStatus
	Result    any // the tool's result (on failure, what it produced, if anything)
	Error     string
	Retryable bool
	Attempt   int // runs so far, 1-based
}

// Decision is what a policy makes of an Outcome.
type Decision struct {
	Do     string         // playbook.DoRetry, DoFail, DoContinue, DoBreak or DoJump
	To     string         // DoJump's target task
	Delay  time.Duration  // before the retry
	Set    map[string]any // rendered context values to assign (MergeContext)
	Reason string         // why; for fail, the error to report
}

// OutputOf is the `output` a policy's rules and a task's `set` read:
// {status: success|error, data, result, error: {message, retryable} or
// none, http: {status} when the result is a mapping with a numeric status,
// attempt}. A failure with such a status also has NoETL's error.kind
// (rate_limit, auth, not_found, client_error, server_error) and error.code
// (HTTP_<status>). data and result are read as step results are (Scope.Vars),
// except an http result's: NoETL's output.data is the response body, so
// there they are the body's keys with the result's (status, status_code,
// headers, body) over them; see httpResult.merged.
func OutputOf(o Outcome) map[string]any {
	res := normalizedAny(o.Result)
	view := wrapResult(res) // an http result reads as NoETL's too: output.data.data, output.data.meta
	if h, ok := view.(httpResult); ok {
		view = resultMap(h.merged())
	}
	out := map[string]any{"status": OutputSuccess, "data": view, "result": view, "error": nil, "attempt": o.Attempt}
	if o.Status != StatusCompleted {
		out["status"] = OutputError
		out["error"] = map[string]any{"message": o.Error, "retryable": o.Retryable}
	}
	if m, ok := res.(map[string]any); ok {
		switch st := m["status"].(type) {
		case int, int64, float64:
			out["http"] = map[string]any{"status": st}
			if e, ok := out["error"].(map[string]any); ok {
				e["kind"], e["code"] = httpErrorKind(st), fmt.Sprintf("HTTP_%v", st)
			}
		}
	}
	return out
}

// httpErrorKind is NoETL's error kind for an HTTP status, so rules can say
// `output.error.kind == 'rate_limit'` as NoETL's fixtures do.
func httpErrorKind(status any) string {
	var n int
	switch v := status.(type) {
	case int:
		n = v
	case int64:
		n = int(v)
	case float64:
		n = int(v)
	}
	switch {
	case n == 429:
		return "rate_limit"
	case n == 401 || n == 403:
		return "auth"
	case n == 404:
		return "not_found"
	case n >= 400 && n < 500:
		return "client_error"
	case n >= 500:
		return "server_error"
	}
	return "unknown"
}

// Decide applies policy p to an outcome. Rules are tried in order and the
// first whose `when` is true (or an `else`) decides. Without a policy, or
// when nothing matches, a completed run continues and a failed one fails.
// A retry past its attempts becomes a fail whose Reason carries the last
// error.
func Decide(p *playbook.Policy, s Scope, o Outcome) (Decision, error) {
	if p != nil && len(p.Rules) > 0 {
		vars := &lazyVars{scope: s.With("output", OutputOf(o))}
		for i, r := range p.Rules {
			field := fmt.Sprintf("%s.rules[%d]", p.Field, i)
			if !r.Else {
				ok, err := evalWhen(r.When, vars)
				if err != nil {
					return Decision{}, templateError(p.Step, field+".when", err)
				}
				if !ok {
					continue
				}
			}
			set, err := renderSet(r.Set, vars, p.Step, field+".then.set")
			if err != nil {
				return Decision{}, err
			}
			return decide(r, i, o, set), nil
		}
	}
	if o.Status == StatusCompleted {
		return Decision{Do: playbook.DoContinue}, nil
	}
	return Decision{Do: playbook.DoFail, Reason: o.Error}, nil
}

func decide(r playbook.Rule, i int, o Outcome, set map[string]any) Decision {
	last := o.Error
	if last == "" {
		last = fmt.Sprintf("policy rule %d (line %d) matched the result", i, r.Line)
	}
	switch r.Do {
	case playbook.DoContinue, playbook.DoBreak, playbook.DoJump:
		d := Decision{Do: r.Do, To: r.To, Set: set}
		if o.Status != StatusCompleted {
			d.Reason = "policy " + r.Do + "s past the error: " + o.Error
		}
		return d
	case playbook.DoRetry:
		attempts := r.Attempts
		if attempts <= 0 {
			attempts = playbook.DefaultRetryAttempts
		}
		if o.Attempt >= attempts {
			return Decision{Do: playbook.DoFail, Set: set, Reason: fmt.Sprintf("gave up after %d attempts: %s", o.Attempt, last)}
		}
		delay := RetryDelay(r, o.Attempt)
		return Decision{Do: playbook.DoRetry, Delay: delay, Set: set,
			Reason: fmt.Sprintf("attempt %d of %d: %s; retrying in %s", o.Attempt, attempts, last, delay)}
	}
	return Decision{Do: playbook.DoFail, Set: set, Reason: last}
}

// RetryDelay is the wait after run number attempt (1-based) under rule r:
// Delay for fixed backoff, Delay * 2^(attempt-1) for exponential, Delay *
// attempt for linear, none for none; capped at MaxRetryDelay.
func RetryDelay(r playbook.Rule, attempt int) time.Duration {
	d := min(r.Delay, MaxRetryDelay)
	switch r.Backoff {
	case playbook.BackoffExponential:
		for i := 1; i < attempt && d < MaxRetryDelay; i++ {
			d *= 2
		}
	case playbook.BackoffLinear:
		for i := 1; i < attempt && d < MaxRetryDelay; i++ {
			d += min(r.Delay, MaxRetryDelay)
		}
	case playbook.BackoffNone:
		d = 0
	}
	return min(d, MaxRetryDelay)
}

// Fired is an arc that fired: the step to start and the rendered values
// its `set` assigns (MergeContext them before starting the step).
type Fired struct {
	Step string
	Set  map[string]any
}

// NextSteps evaluates the arcs of a step that is over (its result already
// in s.Results): in exclusive mode the first arc whose `when` holds fires,
// in inclusive mode every one. `event` is bound to {name: call.done or
// loop.done, step}, and `output` to the step's output envelope (OutputOf
// its result), as NoETL binds it in arcs. None firing means the branch
// ends quietly.
func NextSteps(p *playbook.Playbook, step *playbook.Step, s Scope) ([]Fired, error) {
	if step.Next == nil || len(step.Next.Arcs) == 0 {
		return nil, nil
	}
	name := EventCallDone
	if step.Loop != nil {
		name = EventLoopDone
	}
	vars := &lazyVars{scope: s.With("event", map[string]any{"name": name, "step": step.Name}).
		With("output", OutputOf(Outcome{Status: StatusCompleted, Result: s.Results[step.Name], Attempt: 1}))}
	var fired []Fired
	for i, arc := range step.Next.Arcs {
		field := fmt.Sprintf("next.arcs[%d]", i)
		ok, err := evalWhen(arc.When, vars)
		if err != nil {
			return nil, templateError(step.Name, field+".when", err)
		}
		if !ok {
			continue
		}
		if p.ByName[arc.Step] == nil {
			return nil, fmt.Errorf("step %q has an arc to unknown step %q; the playbook was not validated by playbook.Parse", step.Name, arc.Step)
		}
		set, err := renderSet(arc.Set, vars, step.Name, field+".set")
		if err != nil {
			return nil, err
		}
		fired = append(fired, Fired{Step: arc.Step, Set: set})
		if step.Next.Mode != playbook.ModeInclusive {
			break
		}
	}
	return fired, nil
}

// StepSet renders a step's `set` with `result` bound to the step's result
// and `output` to its output envelope (NoETL's step set reads
// output.data.rows[0]...),
// (for a loop, the list of iteration results, which also answers
// result.results and result.stats as a step result does).
func StepSet(step *playbook.Step, s Scope, result any) (map[string]any, error) {
	if len(step.Set) == 0 {
		return nil, nil
	}
	return renderSet(step.Set, &lazyVars{scope: s.With("result", wrapResult(normalizedAny(result))).
		With("output", OutputOf(Outcome{Status: StatusCompleted, Result: result, Attempt: 1}))}, step.Name, "set")
}

// Continues reports whether d lets the run go on past the outcome it
// decided: continue, break and jump all do (on a single tool, break and
// jump mean continue), retry and fail do not.
func (d Decision) Continues() bool {
	switch d.Do {
	case playbook.DoContinue, playbook.DoBreak, playbook.DoJump:
		return true
	}
	return false
}

// Assign returns s with set assigned (see MergeContext): iter.<name>
// targets go to the task list's per-run scope `iter`, every other target
// to the context. s itself is not modified.
func (s Scope) Assign(set map[string]any) Scope {
	var ctxSet, iterSet map[string]any
	for k, v := range set {
		if rest, ok := strings.CutPrefix(k, playbook.IterScope+"."); ok {
			if iterSet == nil {
				iterSet = map[string]any{}
			}
			iterSet[rest] = v
			continue
		}
		if ctxSet == nil {
			ctxSet = map[string]any{}
		}
		ctxSet[k] = v
	}
	if ctxSet != nil {
		s.Context = MergeContext(s.Context, ctxSet)
	}
	if iterSet != nil {
		it, _ := s.Extra[playbook.IterScope].(map[string]any)
		s = s.With(playbook.IterScope, mergePaths(it, iterSet))
	}
	return s
}

// TaskSet renders a task's `set` with `output` bound to the task's outcome
// (see OutputOf).
func TaskSet(step *playbook.Step, task *playbook.Task, s Scope, o Outcome) (map[string]any, error) {
	if len(task.Set) == 0 {
		return nil, nil
	}
	return renderSet(task.Set, &lazyVars{scope: s.With("output", OutputOf(o))}, step.Name, "tool["+task.Name+"].set")
}

func renderSet(set map[string]any, vars *lazyVars, step, field string) (map[string]any, error) {
	if len(set) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(set))
	for _, k := range slices.Sorted(maps.Keys(set)) {
		v, err := renderValue(set[k], vars, field+"."+k, false)
		if err != nil {
			te := err.(*TemplateError)
			te.Step = step
			return nil, te
		}
		out[k] = v
	}
	return out, nil
}

// MergeContext returns ctx with set assigned: "ctx.name" and "name" both
// assign name, and a dotted path ("ctx.a.b") assigns inside a mapping,
// creating it. Neither argument is modified.
func MergeContext(ctx map[string]any, set map[string]any) map[string]any {
	trimmed := make(map[string]any, len(set))
	for k, v := range set {
		trimmed[strings.TrimPrefix(k, "ctx.")] = v
	}
	return mergePaths(ctx, trimmed)
}

// mergePaths returns m with each dotted path of set assigned, creating
// mappings on the way. Neither argument is modified.
func mergePaths(m0 map[string]any, set map[string]any) map[string]any {
	out := maps.Clone(m0)
	if out == nil {
		out = make(map[string]any, len(set))
	}
	// Shorter paths first, so {a: {...}, a.b: 1} assigns a, then a.b.
	for _, k := range slices.Sorted(maps.Keys(set)) {
		path := strings.Split(k, ".")
		m := out
		for _, p := range path[:len(path)-1] {
			child, ok := m[p].(map[string]any)
			if ok {
				child = maps.Clone(child) // the caller's nested maps stay untouched
			} else {
				child = map[string]any{}
			}
			m[p] = child
			m = child
		}
		m[path[len(path)-1]] = set[k]
	}
	return out
}

// CheckExpects reports an input name the tool's assert expects but its
// rendered config does not give (missing or null in tool["input"]).
func CheckExpects(a *playbook.Assert, tool map[string]any) error {
	if a == nil {
		return nil
	}
	input, _ := tool["input"].(map[string]any)
	for _, name := range a.Expects {
		if input[name] == nil {
			return fmt.Errorf("assert.expects: input %q is missing or null; pass it in the tool's input", name)
		}
	}
	return nil
}

// CheckReturns reports a key the tool's assert promises but its result (a
// mapping) lacks.
func CheckReturns(a *playbook.Assert, result any) error {
	if a == nil || len(a.Returns) == 0 {
		return nil
	}
	m, ok := result.(map[string]any)
	if !ok {
		return fmt.Errorf("assert.returns: result is %s, not a mapping with %s", typeName(result), strings.Join(a.Returns, ", "))
	}
	for _, k := range a.Returns {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("assert.returns: result has no %q", k)
		}
	}
	return nil
}
