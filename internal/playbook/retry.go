package playbook

import (
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"
)

// NoETL writes a playbook tool's retry as `retry: {max_attempts: 2,
// retry_on: [timeout]}`. NoETL's own runtime does not read it for this
// tool; its writer plainly means "run the child again on a timeout", so
// Millrace applies it as a policy rule: retry while the child's error is
// retryable (a timeout, or the worker cancelling the step: the playbook
// tool's only retryable errors), or on any error when retry_on is absent.
var playbookRetryKeys = []string{"max_attempts", "retry_on", "delay", "backoff"}

// retryOn maps NoETL's retry_on names to the condition they stand for.
var retryOn = map[string]string{
	"timeout": "output.error.retryable",
	"error":   "true",
	"failure": "true",
}

const hintPlaybookRetry = "write `retry: {max_attempts: 3, retry_on: [timeout]}`, or a policy: `spec: {policy: {rules: [{when: ..., then: {do: retry, attempts: 3}}]}}`"

// playbookRetry turns a playbook tool's retry into its policy. It returns
// nil when f has no retry (or a broken one, reported).
func (ps *parser) playbookRetry(f map[string]entry, loc toolLoc) *Policy {
	e, ok := f["retry"]
	if !ok {
		return nil
	}
	delete(f, "retry")
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, hintPlaybookRetry, "%s: %s.retry must be a mapping, got %s", loc.owner, loc.field, describe(e.val))
		return nil
	}
	rf := ps.mapping(e.val, "in playbook retry", playbookRetryKeys)
	r := Rule{Do: DoRetry, Attempts: DefaultRetryAttempts, Delay: DefaultRetryDelay, Backoff: BackoffFixed, Line: e.key.Line, Col: e.key.Column}
	if a, ok := rf["max_attempts"]; ok {
		d := deref(a.val)
		if d.Kind != yaml.ScalarNode || d.ShortTag() != "!!int" || d.Decode(&r.Attempts) != nil || r.Attempts < 1 || r.Attempts > MaxRetryAttempts {
			ps.atNode(a.val, fmt.Sprintf("the total number of runs, 1 to %d", MaxRetryAttempts), "%s: %s.retry.max_attempts must be an integer from 1 to %d, got %s", loc.owner, loc.field, MaxRetryAttempts, describe(a.val))
			return nil
		}
	}
	// delay and backoff read as in a policy's then.
	then := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range []string{"delay", "backoff"} {
		if v, ok := rf[k]; ok {
			then.Content = append(then.Content, v.key, v.val)
		}
	}
	if len(then.Content) > 0 {
		tr := Rule{}
		then.Content = append([]*yaml.Node{{Kind: yaml.ScalarNode, Value: "do"}, {Kind: yaml.ScalarNode, Value: DoRetry}}, then.Content...)
		if !ps.then(then, loc.owner, loc.field+".retry", &tr) {
			return nil
		}
		r.Delay, r.Backoff = tr.Delay, tr.Backoff
	}
	cond := "true"
	if on, ok := rf["retry_on"]; ok {
		list := deref(on.val)
		if list.Kind != yaml.SequenceNode {
			ps.atNode(on.val, hintPlaybookRetry, "%s: %s.retry.retry_on must be a list, got %s", loc.owner, loc.field, describe(on.val))
			return nil
		}
		var conds []string
		for _, item := range list.Content {
			name, _ := ps.scalar(item, "retry_on item")
			c, known := retryOn[name]
			if !known {
				ps.atNode(item, "use timeout (retryable errors) or error (any error)", "%s: %s.retry.retry_on %q is not a condition Millrace knows", loc.owner, loc.field, name)
				return nil
			}
			if !slices.Contains(conds, c) {
				conds = append(conds, c)
			}
		}
		if len(conds) == 1 {
			cond = conds[0]
		} else if len(conds) > 1 {
			cond = "true"
		}
	}
	r.When = "{{ output.status == 'error' and (" + cond + ") }}"
	return &Policy{Rules: []Rule{r}, Step: loc.step, Field: loc.field + ".retry"}
}

// retryPolicy applies a playbook tool's retry, refusing it beside a policy
// of its own (two rule sets for one outcome).
func (ps *parser) retryPolicy(f map[string]entry, loc toolLoc, pol *Policy) *Policy {
	e, has := f["retry"]
	if !has {
		return pol
	}
	if pol != nil {
		ps.atNode(e.key, "move it into the policy as a rule `{when: ..., then: {do: retry, attempts: N}}`",
			"%s: %s has both retry and spec.policy; give one", loc.owner, loc.field)
		delete(f, "retry")
		return pol
	}
	return ps.playbookRetry(f, loc)
}
