package engine

import (
	"strings"

	"github.com/millrace/millrace/internal/playbook"
)

// OutcomeStatus is how one run of a task ended, as a retry policy sees it.
type OutcomeStatus string

// Statuses of an Outcome.
const (
	StatusCompleted OutcomeStatus = "completed"
	StatusFailed    OutcomeStatus = "failed"
)

// Plan is how an execution ends.
type Plan struct {
	Done   bool
	Failed bool
	Result any // result of the last step that ran, when Done and not Failed
	Error  string
}

func renderTool(step *playbook.Step, vars *lazyVars) (map[string]any, error) {
	out := make(map[string]any, len(step.Tool))
	for k, v := range step.Tool {
		if k == "kind" {
			out[k] = v
			continue
		}
		vv := vars
		if k == "input" && step.Tool["kind"] == "python" {
			vv = vars.markingLoops()
		}
		r, err := renderValue(v, vv, "tool."+k, true)
		if err != nil {
			te := err.(*TemplateError)
			te.Step = step.Name
			return nil, te
		}
		out[k] = r
	}
	bindPythonContext(out, vars)
	return out, nil
}

// EvalWhen evaluates an arc condition with Jinja truthiness. Undefined
// names are falsy, and so is a condition that reaches into an undefined
// value (fetch.status when fetch did not run). expr may be wrapped in {{ }}
// or be a bare expression; an empty expr is true, like an arc without when.
// Errors are *TemplateError with Field "when"; NextSteps reports them with
// the step and the full next.arcs[i].when path.
func EvalWhen(expr string, s Scope) (bool, error) {
	ok, err := evalWhen(expr, &lazyVars{scope: s})
	if err != nil {
		return false, templateError("", "when", err)
	}
	return ok, nil
}

func evalWhen(expr string, vars *lazyVars) (bool, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return true, nil
	}
	if !strings.Contains(expr, "{{") && !strings.Contains(expr, "{%") {
		expr = "{{ " + expr + " }}"
	}
	c := compile(expr, false)
	if c.err != nil {
		return false, c.err
	}
	rn := vars.budget()
	if err := rn.check(); err != nil {
		return false, err
	}
	var ok bool
	err := guard(func() (err error) {
		ok, err = c.truthy(vars, rn)
		return err
	})
	if err != nil {
		return false, rn.fail(err)
	}
	return ok, nil
}

func (c *compiled) truthy(vars *lazyVars, rn *run) (bool, error) {
	if c.output != nil {
		v := c.evalValue(vars.get(), rn)
		if v.IsError() {
			if err := v.Interface().(error); !isNoneAccess(err) {
				return false, reason(err)
			}
			return false, nil
		}
		return v.IsTrue(), nil
	}
	// Mixed text and tags, e.g. {% if a %}true{% endif %}: judge the text.
	out, err := c.execute(vars.get(), rn)
	switch {
	case rn.err != nil:
		return false, rn.err
	case err != nil && isNoneAccess(err):
		return false, nil
	case err != nil:
		return false, reason(err)
	}
	return truthyText(out), nil
}

// truthyText reads rendered template text as a boolean.
func truthyText(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "0", "none", "null", "no":
		return false
	}
	return true
}
