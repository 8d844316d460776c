// Package engine renders playbook templates and decides which steps run next.
//
// Templates are Jinja2 (gonja). A value that is exactly one {{ expr }}
// (whitespace around it allowed) renders to the expression's native value, so
// `body: "{{ fetch.data }}"` passes a mapping, not its string form; anything
// else renders to a string.
//
// Undefined variables are treated differently depending on where they appear:
//
//   - In tool fields (RenderTool, Render, RenderValue) an undefined variable or
//     missing attribute is an error naming the step, the field and the
//     variable. A typo must fail the run loudly rather than send an empty URL
//     or header. Use `{{ x | default(...) }}` for optional values.
//   - In arc conditions (EvalWhen) undefined is falsy, as in Jinja, so
//     `{{ fetch.status == 200 }}` is simply false when fetch did not run.
//
// Variables visible to templates are listed on Scope.Vars.
package engine

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"strconv"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
	"github.com/nikolalohinski/gonja/v2/nodes"

	"github.com/millrace/millrace/internal/tools"
)

// MaxCachedTemplates bounds the compiled-template cache, which evicts the
// least recently used. Templates come from playbooks, so the working set is
// small; the bound only protects the server from a client that submits
// endlessly varying templates.
const MaxCachedTemplates = 10000

// Scope is what templates of one execution can see.
type Scope struct {
	ExecutionID int64
	Workload    map[string]any
	Results     map[string]any // step name -> decoded result
	// Context holds the values assigned by `set` (MergeContext builds it).
	// Each is visible at top level and as ctx.<name>.
	Context map[string]any
	// Extra binds names with the highest precedence: a loop's iterator,
	// loop and iter, earlier tasks' results, output, result, event and, at
	// the worker, keychain.
	Extra map[string]any
	// Budget bounds every rendering against this scope; nil takes the
	// default limits and is never cancelled.
	Budget *Budget
}

// Vars returns the template variables, later entries winning on a name clash:
// every workload key at top level, each step result under its step name,
// each context value, then "workload" (the whole workload), "execution_id",
// "job" (NoETL's job variable, see jobVar), "ctx" (the whole context) and
// finally every Extra name.
//
// Integral JSON numbers (decoded as float64 or json.Number) are presented as
// integers so that `/items/{{ fetch.id }}` renders "/items/7", not "7.0".
//
// Step results are wrapped so NoETL's spellings work: a mapping result
// without a "data" key also answers <step>.data with itself, an http
// result answers <step>.data with its body (httpResult), and a list result
// (a loop's) answers <step>.data with itself and .results/.stats as NoETL's
// loop result. Rendered natively the wrappers are plain mappings and lists.
func (s Scope) Vars() map[string]any {
	vars := make(map[string]any, len(s.Workload)+len(s.Results)+len(s.Context)+len(s.Extra)+3)
	workload := normalized(s.Workload)
	for k, v := range workload {
		vars[k] = v
	}
	for k, v := range s.Results {
		vars[k] = wrapResult(normalizedAny(v))
	}
	ctx := normalized(s.Context)
	for k, v := range ctx {
		vars[k] = v
	}
	if workload == nil {
		workload = map[string]any{}
	}
	if ctx == nil {
		ctx = map[string]any{}
	}
	vars["workload"] = workload
	vars["execution_id"] = s.ExecutionID
	vars["job"] = jobVar(s.ExecutionID)
	vars["ctx"] = ctx
	for k, v := range s.Extra {
		if r, ok := v.(taskResult); ok {
			vars[k] = wrapResult(normalizedAny(r.v))
			continue
		}
		vars[k] = normalizedAny(v)
	}
	return vars
}

// jobVar is NoETL's `job` template variable: its uuid, execution_id and id
// are all the execution's id, as strings (NoETL renders them as strings so
// that 64-bit ids survive JSON clients). Fixtures write {{ job.uuid }} into
// TEXT columns and pass {{ job.execution_id }} to child playbooks.
func jobVar(id int64) map[string]any {
	s := strconv.FormatInt(id, 10)
	return map[string]any{"uuid": s, "execution_id": s, "id": s}
}

func normalized(m map[string]any) map[string]any {
	if n, ok := normalize(m); ok {
		return n.(map[string]any)
	}
	return m
}

func normalizedAny(v any) any {
	if n, ok := normalize(v); ok {
		return n
	}
	return v
}

// resultMap is a mapping step result as templates see it.
type resultMap map[string]any

// GetAttribute implements gonja's exec.AttributeGetter: keys, and "data"
// for the result itself unless the result has its own data key.
func (m resultMap) GetAttribute(name string) (*exec.Value, bool) {
	if v, ok := m[name]; ok {
		return exec.AsValue(v), true
	}
	if name == "data" {
		return exec.AsValue(m), true
	}
	return exec.AsValue(nil), false
}

// resultList is a list step result (a loop's) as templates see it. It is
// the list Millrace stores, and it also reads as NoETL's loop result
// {results, stats}: see LoopStats.
type resultList []any

// GetAttribute implements gonja's exec.AttributeGetter: "data" and
// "results" are the list, "stats" is LoopStats of it.
func (l resultList) GetAttribute(name string) (*exec.Value, bool) {
	switch name {
	case "data", "results":
		return exec.AsValue([]any(l)), true
	case "stats":
		return exec.AsValue(LoopStats(l)), true
	}
	return exec.AsValue(nil), false
}

// LoopStats is NoETL's `stats` of a loop's results: total iterations,
// failed (those a policy continued past an error: their result is the
// error envelope {status: error, error, ...}) and success (the rest).
// Every iteration of a finished loop ended, so total is the list's length.
func LoopStats(results []any) map[string]any {
	failed := 0
	for _, r := range results {
		if m, ok := r.(map[string]any); ok && m["status"] == "error" {
			if _, has := m["error"]; has {
				failed++
			}
		}
	}
	return map[string]any{"total": len(results), "success": len(results) - failed, "failed": failed}
}

// httpResult is an http tool's result, {status, status_code, headers,
// body}, as templates see it. It also reads as NoETL's http result
// {status_code, headers, data}: "data" is the body, and a name the result
// does not have is looked up in a mapping body, as NoETL's `output.data.meta`
// reads the page's meta. The result's own keys come first, so a Millrace
// playbook's `fetch.status` or `output.data.body.x` means what it did.
// Rendered natively it is the plain result.
type httpResult map[string]any

// GetAttribute implements gonja's exec.AttributeGetter.
func (m httpResult) GetAttribute(name string) (*exec.Value, bool) {
	body := m["body"]
	if name == "data" {
		if b, ok := body.(map[string]any); ok {
			return exec.AsValue(bodyView(b)), true
		}
		return exec.AsValue(body), true
	}
	if v, ok := m[name]; ok {
		return exec.AsValue(v), true
	}
	if b, ok := body.(map[string]any); ok {
		if v, ok := b[name]; ok {
			return exec.AsValue(v), true
		}
	}
	return exec.AsValue(nil), false
}

// bodyView is a mapping http body as NoETL's spellings read it: its own
// keys; "data" for itself when it has none (as resultMap); and a name it
// lacks from its own "data" mapping, since NoETL's http data is the body in
// one of its tools and the body's data in the other (output.data.data.rows
// reads {rows} and {data: {rows}} alike).
type bodyView map[string]any

// GetAttribute implements gonja's exec.AttributeGetter.
func (m bodyView) GetAttribute(name string) (*exec.Value, bool) {
	if v, ok := m[name]; ok {
		return exec.AsValue(v), true
	}
	if name == "data" {
		return exec.AsValue(m), true
	}
	if d, ok := m["data"].(map[string]any); ok {
		if v, ok := d[name]; ok {
			return exec.AsValue(v), true
		}
	}
	return exec.AsValue(nil), false
}

// withData is the http result with NoETL's data (the body) as a real key:
// output.data rendered whole, and a whole result in python's input, so
// NoETL code's response.get("data") finds the body.
func (m httpResult) withData() map[string]any {
	out := maps.Clone(map[string]any(m))
	out["data"] = m["body"]
	return out
}

// merged is NoETL's output.data for an http result: the body's keys (a
// mapping body), with the result's own keys over them, so both
// output.data.paging (NoETL) and output.data.body (Millrace) read, also in
// a whole render ({{ output }} kept in a variable and read by python). A
// body that is not a mapping is under "data".
func (m httpResult) merged() map[string]any {
	b, ok := m["body"].(map[string]any)
	if !ok {
		return m.withData()
	}
	out := maps.Clone(b)
	maps.Copy(out, map[string]any(m))
	return out
}

// isHTTPResult reports whether m has exactly the http tool's result keys
// (tools' httpTool.Run), so a python result that merely has a "body" is
// not taken for one.
func isHTTPResult(m map[string]any) bool {
	if len(m) != 4 {
		return false
	}
	_, body := m["body"]
	_, headers := m["headers"].(map[string]any)
	_, status := m["status"]
	switch m["status_code"].(type) {
	case int, int64, float64:
		return body && headers && status
	}
	return false
}

// sqlView is a postgres or duckdb result, {rows, columns, row_count,
// rows_affected} and, when a script ran several statements, "statements".
// It also answers NoETL's older per-statement keys: command_<i> is
// statement i's own result (command_0 the result itself when one statement
// ran). Rendered natively it is the plain result.
type sqlView map[string]any

// GetAttribute implements gonja's exec.AttributeGetter.
func (m sqlView) GetAttribute(name string) (*exec.Value, bool) {
	if v, ok := m[name]; ok {
		return exec.AsValue(v), true
	}
	if st := m.command(name); st != nil {
		return exec.AsValue(st), true
	}
	if name == "data" {
		return exec.AsValue(m), true
	}
	return exec.AsValue(nil), false
}

// command returns the statement result NoETL's command_<i> names, or nil.
func (m sqlView) command(name string) any {
	digits, ok := strings.CutPrefix(name, "command_")
	if !ok {
		return nil
	}
	i, err := strconv.Atoi(digits)
	if err != nil || i < 0 {
		return nil
	}
	if sts, ok := m["statements"].([]any); ok {
		if i < len(sts) {
			return sts[i]
		}
		return nil
	}
	if i == 0 {
		return map[string]any(m)
	}
	return nil
}

// withCommands is m with command_<i> keys added, for python code that
// reads NoETL's per-statement shape with dict methods.
func (m sqlView) withCommands() map[string]any {
	out := maps.Clone(map[string]any(m))
	sts, ok := m["statements"].([]any)
	if !ok {
		out["command_0"] = maps.Clone(map[string]any(m)) // a copy, not a cycle
		return out
	}
	for i, st := range sts {
		out["command_"+strconv.Itoa(i)] = st
	}
	return out
}

// isSQLResult reports whether m has exactly the SQL tools' result keys.
func isSQLResult(m map[string]any) bool {
	n := 4
	if _, ok := m["statements"].([]any); ok {
		n = 5
	}
	if len(m) != n {
		return false
	}
	_, rows := m["rows"].([]any)
	_, cols := m["columns"].([]any)
	_, count := m["row_count"]
	_, affected := m["rows_affected"]
	return rows && cols && count && affected
}

func wrapResult(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if isHTTPResult(t) {
			return httpResult(t)
		}
		if isSQLResult(t) {
			return sqlView(t)
		}
		return resultMap(t)
	case []any:
		return resultList(t)
	}
	return v
}

// maxExactFloatInt is the largest magnitude at which every integer is exactly
// representable as a float64.
const maxExactFloatInt = 1 << 53

// normalize converts integral float64 and json.Number values to int,
// copying only the containers that change. It reports whether v changed.
func normalize(v any) (any, bool) {
	switch t := v.(type) {
	case float64:
		if t == math.Trunc(t) && math.Abs(t) <= maxExactFloatInt {
			return int(t), true
		}
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return int(i), true
		}
		if f, err := t.Float64(); err == nil {
			return f, true
		}
		return t.String(), true
	case map[string]any:
		var out map[string]any
		for k, e := range t {
			n, ok := normalize(e)
			if !ok {
				continue
			}
			if out == nil {
				out = make(map[string]any, len(t))
				for k2, e2 := range t {
					out[k2] = e2
				}
			}
			out[k] = n
		}
		if out != nil {
			return out, true
		}
	case []any:
		var out []any
		for i, e := range t {
			n, ok := normalize(e)
			if !ok {
				continue
			}
			if out == nil {
				out = append([]any(nil), t...)
			}
			out[i] = n
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}

// TemplateError says which template failed and why. Step and Field are set
// when known; Field is a dotted path such as tool.headers.Authorization or
// next.arcs[0].when.
type TemplateError struct {
	Step, Field, Reason string
	// Err is the cause when it is a *BudgetError or *CancelledError.
	Err error
}

// Unwrap lets errors.As find a budget or cancellation behind the error.
func (e *TemplateError) Unwrap() error { return e.Err }

// templateError wraps err as a TemplateError, keeping a budget's cause.
func templateError(step, field string, err error) *TemplateError {
	te := &TemplateError{Step: step, Field: field, Reason: err.Error()}
	var b *BudgetError
	var c *CancelledError
	if errors.As(err, &b) || errors.As(err, &c) {
		te.Err = err
	}
	return te
}

func (e *TemplateError) Error() string {
	switch {
	case e.Step != "" && e.Field != "":
		return fmt.Sprintf("step %q field %s: %s", e.Step, e.Field, e.Reason)
	case e.Field != "":
		return fmt.Sprintf("field %s: %s", e.Field, e.Reason)
	case e.Step != "":
		return fmt.Sprintf("step %q: %s", e.Step, e.Reason)
	}
	return "template: " + e.Reason
}

// Render renders one template string against s, strictly (undefined is an
// error). See the package comment for native versus string results; native
// values are plain Go values: map[string]any, []any, string, bool, int,
// float64 or nil.
func Render(tmpl string, s Scope) (any, error) {
	v, err := render(tmpl, &lazyVars{scope: s}, true)
	if err != nil {
		return nil, templateError("", "", err)
	}
	return v, nil
}

// RenderValue renders every string inside v, recursing into maps and lists.
// v itself is not modified.
func RenderValue(v any, s Scope) (any, error) {
	return renderValue(v, &lazyVars{scope: s}, "", false)
}

// lazyVars computes Scope.Vars on first use: most tool fields are literals
// and most arcs have no when, so many calls never need the variables.
type lazyVars struct {
	scope Scope
	vars  map[string]any
	// markLoops renders a loop result that is a whole value as
	// {tools.PythonLoopKey: {results, stats}}, so the python tool can hand
	// its code NoETL's loop result, and a SQL result with NoETL's
	// command_<i> keys added (see markingLoops).
	markLoops bool
	run       *run // this call's budget, started at its first rendering
}

// markingLoops returns vars for a python tool's input: a value that is
// exactly a loop's result ({{ loop_step }}) keeps that identity on the wire,
// and one that is exactly a SQL result gains command_<i> keys.
func (l *lazyVars) markingLoops() *lazyVars {
	return &lazyVars{scope: l.scope, vars: l.get(), markLoops: true, run: l.budget()}
}

// budget is the call's budget state: one deadline and one output count
// for every template the call renders.
func (l *lazyVars) budget() *run {
	if l.run == nil {
		l.run = newRun(l.scope.Budget)
	}
	return l.run
}

func (l *lazyVars) get() map[string]any {
	if l.vars == nil {
		l.vars = l.scope.Vars()
	}
	return l.vars
}

// renderValue renders every string in v; keepKeychain leaves the strings
// that read `keychain` verbatim for the worker.
func renderValue(v any, vars *lazyVars, path string, keepKeychain bool) (any, error) {
	switch t := v.(type) {
	case string:
		if keepKeychain && readsKeychain(t) {
			return t, nil
		}
		out, err := render(t, vars, true)
		if err != nil {
			return nil, templateError("", path, err)
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			r, err := renderValue(e, vars, join(path, k), keepKeychain)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			r, err := renderValue(e, vars, fmt.Sprintf("%s[%d]", path, i), keepKeychain)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// render renders tmpl; strict makes undefined names and attributes errors.
func render(tmpl string, vars *lazyVars, strict bool) (any, error) {
	if !strings.Contains(tmpl, "{{") && !strings.Contains(tmpl, "{%") {
		return tmpl, nil
	}
	c := compile(tmpl, strict)
	if c.err != nil {
		return nil, c.err
	}
	rn := vars.budget()
	if err := rn.check(); err != nil {
		return nil, err
	}
	var out any
	err := guard(func() (err error) {
		if c.output != nil {
			out, err = c.eval(vars.get(), vars.markLoops, rn)
			return err
		}
		out, err = c.execute(vars.get(), rn)
		if err != nil {
			return reason(err)
		}
		return nil
	})
	if err != nil {
		return nil, rn.fail(err)
	}
	return out, nil
}

// execute renders a template with text and tags to a string, through the
// budget's limited writer.
func (c *compiled) execute(vars map[string]any, rn *run) (string, error) {
	env := &exec.Environment{
		Context:           environment.Context.Inherit().Update(exec.NewContext(vars)),
		Filters:           environment.Filters,
		Tests:             environment.Tests,
		ControlStructures: environment.ControlStructures,
		Methods:           environment.Methods,
	}
	env.Context.Set(budgetKey, rn)
	w := &limitedWriter{run: rn}
	if err := exec.NewRenderer(env, w, c.cfg, c.loader, c.tmpl).Execute(); err != nil {
		return "", err
	}
	return w.b.String(), nil
}

// guard turns a gonja panic into an error. gonja panics on some inputs
// (found by FuzzRender: {{ x % 0 }}), and a playbook must never be able to
// crash the server rendering it.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("template evaluation failed: %v", r)
		}
	}()
	return fn()
}

// compiled is a parsed template, shared by every execution that renders it.
type compiled struct {
	tmpl   *exec.Template
	output *nodes.Output // set when the source is a single {{ expr }}
	cfg    *config.Config
	loader loaders.Loader
	err    error // parse error, cached too so bad templates are not reparsed
}

type cacheKey struct {
	src    string
	strict bool
}

// cache holds the most recently used compiled templates. New returns an
// error only for a size <= 0.
var cache, _ = lru.New[cacheKey, *compiled](MaxCachedTemplates)

// templateName is the in-memory loader's only entry, so {% include %} and
// friends cannot read files from the server's disk.
const templateName = "/template"

func compile(src string, strict bool) *compiled {
	key := cacheKey{src, strict}
	if c, ok := cache.Get(key); ok {
		return c
	}
	c := &compiled{cfg: config.New()}
	c.cfg.StrictUndefined = strict
	c.loader = loaders.MustNewMemoryLoader(map[string]string{templateName: src})
	c.err = guard(func() (err error) {
		c.tmpl, err = exec.NewTemplate(templateName, c.cfg, c.loader, environment)
		if err == nil {
			instrument(c.tmpl.Root())
		}
		return err
	})
	if c.err != nil {
		c.err = fmt.Errorf("syntax error: %w", reason(c.err))
	} else {
		c.output = singleOutput(c.tmpl.Root())
	}
	// Two callers may compile the same source at once; either result will do.
	cache.Add(key, c)
	return c
}

// singleOutput returns the template's only {{ }} node when nothing but
// whitespace surrounds it.
func singleOutput(root *nodes.Template) *nodes.Output {
	if root.Parent != nil {
		return nil
	}
	var out *nodes.Output
	for _, n := range root.Nodes {
		switch t := n.(type) {
		case *nodes.Data:
			if strings.TrimSpace(t.Data.Val) != "" {
				return nil
			}
		case *nodes.Output:
			if out != nil {
				return nil
			}
			out = t
		default:
			return nil
		}
	}
	return out
}

// eval evaluates a single-expression template to its native Go value.
func (c *compiled) eval(vars map[string]any, markLoops bool, rn *run) (any, error) {
	v := c.evalValue(vars, rn)
	if v.IsError() {
		return nil, reason(v.Interface().(error))
	}
	if markLoops {
		switch t := v.Interface().(type) {
		case resultList:
			return map[string]any{tools.PythonLoopKey: map[string]any{"results": []any(t), "stats": LoopStats(t)}}, nil
		case sqlView:
			return t.withCommands(), nil
		case httpResult:
			return t.withData(), nil
		}
	}
	native := v.ToGoSimpleType(false)
	if err, ok := native.(error); ok {
		return nil, reason(err)
	}
	return native, nil
}

func (c *compiled) evalValue(vars map[string]any, rn *run) *exec.Value {
	ctx := environment.Context.Inherit().Update(exec.NewContext(vars))
	ctx.Set(budgetKey, rn)
	ev := &exec.Evaluator{
		Config: c.cfg,
		Environment: &exec.Environment{
			Context:           ctx,
			Filters:           environment.Filters,
			Tests:             environment.Tests,
			ControlStructures: environment.ControlStructures,
			Methods:           environment.Methods,
		},
		Loader: c.loader,
	}
	o := c.output
	if o.Condition == nil {
		return ev.Eval(o.Expression)
	}
	// Inline if: {{ a if cond else b }}, mirroring gonja's renderer.
	cond := ev.Eval(o.Condition)
	switch {
	case cond.IsError():
		return cond
	case cond.IsTrue():
		return ev.Eval(o.Expression)
	case o.Alternative != nil:
		return ev.Eval(o.Alternative)
	}
	return exec.AsValue(nil)
}

var undefinedNameRE = regexp.MustCompile(`Unable to evaluate name "([^"]+)"`)

// reason reduces gonja's stacked error wrapping to its root cause, phrased
// for a playbook author.
func reason(err error) error {
	root := cause(err)
	if root == nil {
		root = err
	}
	msg := root.Error()
	if m := undefinedNameRE.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("variable %q is undefined; it must be a workload key, an earlier step's name or execution_id, or use {{ %s | default(...) }} if it is optional", m[1], m[1])
	}
	return errors.New(msg)
}

// cause follows err's Cause chain, as github.com/pkg/errors.Cause does:
// gonja wraps with that package, whose wrappers name what they wrap by
// Cause(). It stops at the first error without one, which matters: an
// fmt.Errorf("%w: ...") in gonja carries the message a playbook author
// needs, and errors.Unwrap would go past it. nil if a Cause() is nil.
func cause(err error) error {
	for err != nil {
		c, ok := err.(interface{ Cause() error })
		if !ok {
			break
		}
		err = c.Cause()
	}
	return err
}

// isNoneAccess reports gonja's error for reaching into an undefined (None)
// value, e.g. fetch.status when fetch did not run.
func isNoneAccess(err error) bool {
	root := cause(err)
	return root != nil && strings.HasSuffix(root.Error(), " on None")
}

// environment is gonja's default environment plus filters playbooks use.
var environment = newEnvironment()

func newEnvironment() *exec.Environment {
	filters := exec.NewFilterSet(map[string]exec.FilterFunction{}).Update(builtins.Filters)
	for name, fn := range map[string]exec.FilterFunction{
		"b64encode": filterB64Encode,
		"b64decode": filterB64Decode,
	} {
		if filters.Exists(name) {
			continue // a later gonja ships its own; prefer it
		}
		if err := filters.Register(name, fn); err != nil {
			panic(err)
		}
	}
	// Jinja accepts lowercase none as a literal; gonja only parses None.
	ctx := gonja.DefaultContext.Inherit()
	ctx.Set("none", nil)
	installBudgets(ctx, filters)
	return &exec.Environment{
		Context:           ctx,
		Filters:           filters,
		Tests:             builtins.Tests,
		ControlStructures: builtins.ControlStructures,
		Methods:           builtins.Methods,
	}
}

func filterB64Encode(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	if b, ok := in.Interface().([]byte); ok {
		return exec.AsValue(base64.StdEncoding.EncodeToString(b))
	}
	return exec.AsValue(base64.StdEncoding.EncodeToString([]byte(in.String())))
}

func filterB64Decode(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	b, err := base64.StdEncoding.DecodeString(in.String())
	if err != nil {
		return exec.AsValue(fmt.Errorf("b64decode: %w", err))
	}
	return exec.AsValue(string(b))
}
