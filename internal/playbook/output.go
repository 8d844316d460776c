package playbook

import "go.yaml.in/yaml/v3"

// NoETL's output block (tool.output, and the step-level form NoETL v10
// no longer reads) says where a result is stored (store: NATS KV, GCS,
// Postgres, ...) and which fields stay inline beside the stored reference
// (select, output_select). Millrace keeps every result in its own store,
// by reference above a size limit, with every field readable, so these keys
// are checked for shape and have no effect; docs/compat.md says so. The
// ones that would change a result (accumulate, as) are refused.
var outputKeys = []string{"store", "select", "output_select", "inline_max_bytes", "preview_max_bytes", "scope"}

func init() {
	unsupported["in output"] = map[string]string{
		"accumulate": "collect pages in a task list with `then.set: {iter.pages: ...}` and `do: jump` (see docs/playbooks.md)",
		"as":         "read the result by the step's (or task's) name",
	}
}

func (ps *parser) output(n *yaml.Node, owner string) {
	if isNull(n) {
		return
	}
	if deref(n).Kind != yaml.MappingNode {
		ps.atNode(n, "write e.g. `output: {store: {kind: kv}}`", "%s: output must be a mapping, got %s", owner, describe(n))
		return
	}
	f := ps.mapping(n, "in output", outputKeys)
	if e, ok := f["store"]; ok && !isNull(e.val) && deref(e.val).Kind != yaml.MappingNode {
		ps.atNode(e.val, "write e.g. `store: {kind: kv}`", "%s: output.store must be a mapping, got %s", owner, describe(e.val))
	}
	for _, k := range []string{"inline_max_bytes", "preview_max_bytes"} {
		if e, ok := f[k]; ok {
			if d := deref(e.val); d.Kind != yaml.ScalarNode || d.ShortTag() != "!!int" {
				ps.atNode(e.val, "write a number of bytes", "%s: output.%s must be a whole number, got %s", owner, k, describe(e.val))
			}
		}
	}

}
