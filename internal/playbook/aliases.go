package playbook

import (
	"fmt"
	"slices"
	"strings"
)

// aliasGroups lists, per tool kind, keys that say the same thing (NoETL's
// names beside ours). A tool may give at most one key of each group.
var aliasGroups = map[string][][]string{
	"http":     {{"url", "endpoint"}, {"body", "json", "payload", "data"}},
	"playbook": {{"input", "payload"}},
}

// canonicalKeys renames, per tool kind, an alias whose value the parser
// itself handles to our key: a playbook tool's payload is its input, so the
// step's input merges into it.
var canonicalKeys = map[string]map[string]string{
	"playbook": {"payload": "input"},
}

// canonicalize renames f's aliased keys in place; checkAliases has already
// refused a tool giving both names.
func canonicalize(f map[string]entry, kind string) {
	for alias, ours := range canonicalKeys[kind] {
		if e, ok := f[alias]; ok {
			if _, both := f[ours]; !both {
				f[ours] = e
				delete(f, alias)
			}
		}
	}
}

// checkAliases reports a tool that gives two keys of one alias group,
// naming both at the second.
func (ps *parser) checkAliases(f map[string]entry, kind, where string) {
	for _, group := range aliasGroups[kind] {
		var given []string
		for _, k := range group {
			if _, ok := f[k]; ok {
				given = append(given, k)
			}
		}
		if len(given) < 2 {
			continue
		}
		// Report at the later key so the message points at the duplicate.
		slices.SortFunc(given, func(a, b string) int { return f[a].key.Line - f[b].key.Line })
		last := given[len(given)-1]
		ps.atNode(f[last].key, fmt.Sprintf("keep one of %s", strings.Join(given, ", ")),
			"%s: %q and %q say the same thing; give only one", where, given[0], last)
	}
}
