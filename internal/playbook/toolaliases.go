package playbook

import (
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"
)

// toolAliases are the names NoETL accepts for a tool's keys, by kind: alias
// -> the key Millrace uses. The parser renames them, so workers only ever
// see the Millrace key, and giving a key and its alias together is refused.
var toolAliases = map[string]map[string]string{
	"postgres": {
		"query": "command", "queries": "command", "commands": "command", "cmd": "command", "cmds": "command",
		"credential": "auth",
	},
	"duckdb": {"command": "query", "commands": "query"},
}

// toolInert are keys NoETL accepts that have no effect in Millrace, by kind,
// with the reason; they are checked for shape and dropped.
var toolInert = map[string]map[string]string{
	// Each postgres command runs on its own connection, closed when it ends,
	// and a worker's concurrency is bounded by its slots, so there is no
	// per-step pool to size.
	"postgres": {"pool": "a mapping of pool settings (max_size, ...); Millrace opens one connection per command"},
}

// canonicalKeys renames the NoETL aliases in a tool's keys f to their
// Millrace keys and drops the inert ones, reporting a key given together
// with one of its aliases.
func (ps *parser) canonicalKeys(f map[string]entry, kind string, loc toolLoc) {
	allowed := ps.kinds[kind]
	given := map[string]string{} // Millrace key -> the name it was given as
	for _, k := range sortedKeys(f) {
		e := f[k]
		if why, ok := toolInert[kind][k]; ok {
			if d := deref(e.val); d.Kind != yaml.MappingNode && !isNull(e.val) {
				ps.atNode(e.val, "write "+why, "%s: %s.%s must be a mapping, got %s", loc.owner, loc.field, k, describe(e.val))
			}
			delete(f, k)
			continue
		}
		canon, ok := toolAliases[kind][k]
		if !ok || !slices.Contains(allowed, canon) {
			continue
		}
		if first, dup := f[canon]; dup {
			name := canon
			if given[canon] != "" {
				name = given[canon]
			}
			ps.atNode(e.key, fmt.Sprintf("%q is an alias of %q; keep one of them", k, canon),
				"%s: %s has both %q (line %d) and %q", loc.owner, loc.field, name, first.key.Line, k)
			delete(f, k)
			continue
		}
		given[canon] = k
		f[canon] = e
		delete(f, k)
	}
}
