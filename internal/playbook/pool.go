package playbook

import (
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A step's `pool:` routes its commands to one worker pool: the workers
// started with MILLRACE_WORKER_POOL=<pool>, which take them from the
// subject NATS_SUBJECT.<pool>. NoETL has no such key; it is Millrace's
// (docs/playbooks.md, "Worker pools"). The name is used as a NATS subject
// token, a consumer name and, in the Helm chart, part of a Deployment
// name, hence a DNS label. It is a literal: the subject is fixed when
// the command is issued, before any template could be rendered.

// MaxPoolName is the longest pool name (a DNS label's limit).
const MaxPoolName = 63

// PoolNamePattern is the rule a pool name follows; bus.PoolNamePattern is
// the same rule on the worker's side (a test keeps them equal).
const PoolNamePattern = `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`

var poolNameRE = regexp.MustCompile(PoolNamePattern)

const poolHint = "a pool name is lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (a DNS label), e.g. `pool: gpu`"

// pool checks a step's `pool:` value.
func (ps *parser) pool(n *yaml.Node, step string) string {
	d := deref(n)
	if d.Kind != yaml.ScalarNode || isNull(d) {
		ps.atNode(n, poolHint, "step %q: pool must be a name, got %s", step, describe(n))
		return ""
	}
	name := d.Value
	switch {
	case len(name) > MaxPoolName:
		ps.atNode(n, poolHint, "step %q: pool name %q is %d characters long; at most %d", step, name, len(name), MaxPoolName)
		return ""
	case !poolNameRE.MatchString(name):
		hint := poolHint
		if hasTemplate(name) {
			hint = "pool is a literal name, not a template: the command's subject is fixed when it is issued; " + poolHint
		}
		ps.atNode(n, hint, "step %q: invalid pool name %q (it must match %s)", step, name, PoolNamePattern)
		return ""
	}
	return name
}

// hasTemplate reports whether s looks like a Jinja template.
func hasTemplate(s string) bool { return strings.Contains(s, "{{") || strings.Contains(s, "{%") }
