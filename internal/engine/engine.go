package engine

import (
	"fmt"
	"strings"

	"github.com/nikolalohinski/gonja/v2/exec"

	"github.com/millrace/millrace/internal/playbook"
)

// Command statuses reported in Finished.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Finished is a command of an execution that reached a terminal status.
type Finished struct {
	Step   string
	Status string // StatusCompleted or StatusFailed
	Result any
	Error  string
}

// Issue asks for a step to run with its rendered tool.
type Issue struct {
	Step string
	Tool map[string]any
}

// Plan is what the execution does next: issue steps, or finish.
type Plan struct {
	Issue  []Issue
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
		r, err := renderValue(v, vars, "tool."+k, true)
		if err != nil {
			te := err.(*TemplateError)
			te.Step = step.Name
			return nil, te
		}
		out[k] = r
	}
	return out, nil
}

// EvalWhen evaluates an arc condition with Jinja truthiness. Undefined
// names are falsy, and so is a condition that reaches into an undefined
// value (fetch.status when fetch did not run). expr may be wrapped in {{ }}
// or be a bare expression; an empty expr is true, like an arc without when.
// Errors are *TemplateError with Field "when"; Advance reports them with the
// step and the full next.arcs[i].when path.
func EvalWhen(expr string, s Scope) (bool, error) {
	ok, err := evalWhen(expr, &lazyVars{scope: s})
	if err != nil {
		return false, &TemplateError{Field: "when", Reason: err.Error()}
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
	var ok bool
	err := guard(func() (err error) {
		ok, err = c.truthy(vars)
		return err
	})
	return ok, err
}

func (c *compiled) truthy(vars *lazyVars) (bool, error) {
	if c.output != nil {
		v := c.evalValue(vars.get())
		if v.IsError() {
			if err := v.Interface().(error); !isNoneAccess(err) {
				return false, reason(err)
			}
			return false, nil
		}
		return v.IsTrue(), nil
	}
	// Mixed text and tags, e.g. {% if a %}true{% endif %}: judge the text.
	out, err := c.tmpl.ExecuteToString(exec.NewContext(vars.get()))
	switch {
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

// Begin issues the playbook's start step.
func Begin(p *playbook.Playbook, s Scope) (Plan, error) {
	start := p.StartStep()
	if start == nil {
		return Plan{}, fmt.Errorf("playbook %q has no steps; parse it with playbook.Parse, which rejects empty workflows", p.Metadata.Name)
	}
	tool, err := renderTool(start, &lazyVars{scope: s})
	if err != nil {
		return failed(err.Error()), nil
	}
	return Plan{Issue: []Issue{{Step: start.Name, Tool: tool}}}, nil
}

// Advance decides what follows a finished command. s.Results must already
// hold f.Result under f.Step; pending counts the execution's other commands
// that are not terminal yet.
//
// A failed step fails the execution. A completed step fires its arcs in
// order: in exclusive mode only the first whose when is true, in inclusive
// mode all of them. When nothing is issued and nothing is pending the
// execution is done, with the finished step's result as its result.
func Advance(p *playbook.Playbook, s Scope, f Finished, pending int) (Plan, error) {
	step := p.ByName[f.Step]
	if step == nil {
		return Plan{}, fmt.Errorf("finished command names step %q, which playbook %q does not have", f.Step, p.Metadata.Name)
	}
	switch f.Status {
	case StatusFailed:
		return failed(fmt.Sprintf("step %s failed: %s", f.Step, f.Error)), nil
	case StatusCompleted:
	default:
		return Plan{}, fmt.Errorf("step %q finished with status %q; want %q or %q", f.Step, f.Status, StatusCompleted, StatusFailed)
	}

	var plan Plan
	if step.Next != nil && len(step.Next.Arcs) > 0 {
		vars := &lazyVars{scope: s}
		for i, arc := range step.Next.Arcs {
			ok, err := evalWhen(arc.When, vars)
			if err != nil {
				te := &TemplateError{Step: step.Name, Field: fmt.Sprintf("next.arcs[%d].when", i), Reason: err.Error()}
				return failed(te.Error()), nil
			}
			if !ok {
				continue
			}
			target := p.ByName[arc.Step]
			if target == nil {
				return Plan{}, fmt.Errorf("step %q has an arc to unknown step %q; the playbook was not validated by playbook.Parse", step.Name, arc.Step)
			}
			tool, err := renderTool(target, vars)
			if err != nil {
				return failed(err.Error()), nil
			}
			plan.Issue = append(plan.Issue, Issue{Step: target.Name, Tool: tool})
			if step.Next.Mode != playbook.ModeInclusive {
				break
			}
		}
	}
	if len(plan.Issue) == 0 && pending == 0 {
		plan.Done = true
		plan.Result = f.Result
	}
	return plan, nil
}

func failed(msg string) Plan {
	return Plan{Done: true, Failed: true, Error: msg}
}
