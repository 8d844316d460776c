package playbook

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// NoETL's top-level executor block (canonical v10). Most of it describes
// NoETL's own runtime and has no counterpart here; what has one is used:
// requires.tools is checked against the tool kinds this build runs, and
// spec.entry_step picks the start step. Keys whose meaning Millrace lacks
// (final_step, no_next_is_error: true) are refused.
var (
	executorKeys         = []string{"profile", "version", "requires", "spec"}
	executorRequiresKeys = []string{"tools", "features"}
	executorSpecKeys     = []string{"entry_step", "no_next_is_error", "policy"}
	executorPolicyKeys   = []string{"defaults", "results", "limits"}
)

func init() {
	unsupported["in executor.spec"] = map[string]string{
		"final_step": "Millrace has no finalization step: route to the step from the last step's next.arcs",
	}
}

func (ps *parser) executor(n *yaml.Node) {
	const shape = "e.g. `executor: {profile: auto, requires: {tools: [python]}}`"
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, shape, "executor must be a mapping, got %s", describe(n))
		return
	}
	f := ps.mapping(n, "in executor", executorKeys)
	if e, ok := f["profile"]; ok {
		// local, distributed or auto: where NoETL runs the playbook. Here
		// the runtime is chosen by how it is started (millrace run
		// --runtime), so the value is checked and has no effect.
		if p, _ := ps.scalar(e.val, "executor.profile"); p != "" && !slices.Contains([]string{"local", "distributed", "auto"}, p) {
			ps.atNode(e.val, "use local, distributed or auto", "unknown executor.profile %q", p)
		}
	}
	if e, ok := f["version"]; ok {
		ps.scalar(e.val, "executor.version") // NoETL's runtime contract name
	}
	if e, ok := f["requires"]; ok && !isNull(e.val) {
		if deref(e.val).Kind != yaml.MappingNode {
			ps.atNode(e.val, "write `requires: {tools: [python, http]}`", "executor.requires must be a mapping, got %s", describe(e.val))
		} else {
			rf := ps.mapping(e.val, "in executor.requires", executorRequiresKeys)
			if t, ok := rf["tools"]; ok {
				ps.requiredTools(t.val)
			}
			if t, ok := rf["features"]; ok && deref(t.val).Kind != yaml.SequenceNode && !isNull(t.val) {
				ps.atNode(t.val, "write a list of names", "executor.requires.features must be a list, got %s", describe(t.val))
			}
		}
	}
	e, ok := f["spec"]
	if !ok || isNull(e.val) {
		return
	}
	if deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, "write `spec: {entry_step: start}`", "executor.spec must be a mapping, got %s", describe(e.val))
		return
	}
	sf := ps.mapping(e.val, "in executor.spec", executorSpecKeys)
	if s, ok := sf["entry_step"]; ok {
		ps.entry, _ = ps.scalar(s.val, "executor.spec.entry_step")
		ps.entryNode = s.val
	}
	if s, ok := sf["no_next_is_error"]; ok {
		var b bool
		d := deref(s.val)
		switch {
		case d.Kind != yaml.ScalarNode || d.ShortTag() != "!!bool" || d.Decode(&b) != nil:
			ps.atNode(s.val, "write true or false", "executor.spec.no_next_is_error must be true or false, got %s", describe(s.val))
		case b:
			ps.atNode(s.val, "end the run explicitly: give the last arc no `when`, or route to a step that fails",
				"executor.spec.no_next_is_error: true is NoETL's; Millrace does not implement it (a step whose arcs all are false ends its branch)")
		}
	}
	if p, ok := sf["policy"]; ok && !isNull(p.val) {
		// NoETL documents these as placeholders for global defaults
		// (timeouts, reference-first results, payload limits); Millrace's
		// equivalents are the step's timeout and its own result storage.
		if deref(p.val).Kind != yaml.MappingNode {
			ps.atNode(p.val, "write `policy: {defaults: {...}}`", "executor.spec.policy must be a mapping, got %s", describe(p.val))
		} else {
			ps.mapping(p.val, "in executor.spec.policy", executorPolicyKeys)
		}
	}
}

// requiredTools checks executor.requires.tools against the kinds this
// build runs: a playbook that needs a missing one is refused up front.
func (ps *parser) requiredTools(n *yaml.Node) {
	list := deref(n)
	if list.Kind != yaml.SequenceNode {
		ps.atNode(n, "write a list of tool kinds, e.g. `tools: [python, http]`", "executor.requires.tools must be a list, got %s", describe(n))
		return
	}
	for _, item := range list.Content {
		kind, ok := ps.scalar(item, "executor.requires.tools item")
		if !ok {
			continue
		}
		if _, known := ps.kinds[kind]; known {
			continue
		}
		if hint, refused := refusedKinds[kind]; refused {
			ps.atNode(item, hint, "executor.requires.tools: tool kind %q is NoETL's; Millrace does not implement it", kind)
			continue
		}
		ps.atNode(item, "known kinds: "+strings.Join(ps.kindNames(), ", "), "executor.requires.tools: unknown tool kind %q", kind)
	}
}

// resolveEntry applies executor.spec.entry_step once the steps are known.
func (ps *parser) resolveEntry(pb *Playbook) {
	if ps.entry == "" {
		return
	}
	if pb.ByName[ps.entry] == nil {
		ps.atNode(ps.entryNode, suggestName(ps.entry, pb.Steps), "executor.spec.entry_step names unknown step %q", ps.entry)
		return
	}
	pb.Entry = ps.entry
}
