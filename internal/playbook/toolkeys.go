package playbook

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// toolKeySpec is, for one tool kind, the keys NoETL writes that Millrace
// reads under another name, and the keys it accepts without effect. It is
// the one table for both; docs/compat.md lists what it holds.
type toolKeySpec struct {
	groups []keyGroup
	inert  map[string]inertKey
}

// keyGroup is a set of keys that say the same thing: a tool gives at most
// one of them.
type keyGroup struct {
	// canonical is the key the parser renames every member to, so workers
	// only ever see that one. It is "" when the members differ in how the
	// tool uses the value (http: json is always JSON-encoded, data and
	// payload may become a form or a query string) and keep their names.
	canonical string
	keys      []string // every member, canonical first
}

// inertKey is a key accepted for NoETL's sake that has no effect here:
// checked for shape (a mapping when mapping is set), then dropped.
type inertKey struct {
	mapping bool
	shape   string // how to write it, for the hint
	why     string // why it has no effect
}

var toolKeyTable = map[string]toolKeySpec{
	"postgres": {
		groups: []keyGroup{
			{"command", []string{"command", "query", "queries", "commands", "cmd", "cmds"}},
			{"auth", []string{"auth", "credential"}},
		},
		inert: map[string]inertKey{
			// Each postgres command runs on its own connection, closed when
			// it ends, and a worker's concurrency is bounded by its slots,
			// so there is no per-step pool to size.
			"pool": {mapping: true, shape: "a mapping of pool settings (max_size, ...)", why: "Millrace opens one connection per command"},
		},
	},
	"duckdb": {groups: []keyGroup{{"query", []string{"query", "command", "commands"}}}},
	"http": {
		groups: []keyGroup{
			{"url", []string{"url", "endpoint"}},
			{"", []string{"body", "json", "payload", "data"}},
			// NoETL's http tool reads only timeout and ignores
			// timeout_seconds; the writer plainly meant a timeout.
			{"timeout", []string{"timeout", "timeout_seconds"}},
		},
		inert: map[string]inertKey{
			// NoETL's result-storage selection (which fields stay inline
			// beside a stored reference); every field of a Millrace
			// result stays readable, so there is nothing to select.
			"output_select": {why: "Millrace keeps the whole result readable"},
		},
	},
	// NoETL binds a python tool's args as its variables, as input does.
	"python":   {groups: []keyGroup{{"input", []string{"input", "args"}}}},
	"playbook": {groups: []keyGroup{{"input", []string{"input", "payload"}}}},
}

// groupOf returns the group of kind holding key, or nil.
func groupOf(kind, key string) *keyGroup {
	spec := toolKeyTable[kind]
	for i := range spec.groups {
		if slices.Contains(spec.groups[i].keys, key) {
			return &spec.groups[i]
		}
	}
	return nil
}

// toolKeys applies kind's table to a tool's keys f: inert keys are checked
// and dropped, a group given twice is refused at the later key, and a
// group's member is renamed to its canonical key. It returns the groups the
// tool gives, by the key they now have in f, so a workbook call can replace
// the entry's member of the same group. Members the kind does not list
// (tests use reduced kind sets) are left to checkKeys.
func (ps *parser) toolKeys(f map[string]entry, kind string, loc toolLoc) map[*keyGroup]string {
	spec := toolKeyTable[kind]
	allowed := ps.kinds[kind]
	for k, in := range spec.inert {
		e, ok := f[k]
		if !ok {
			continue
		}
		if in.mapping && deref(e.val).Kind != yaml.MappingNode && !isNull(e.val) {
			ps.atNode(e.val, "write "+in.shape+"; "+in.why, "%s: %s.%s must be a mapping, got %s", loc.owner, loc.field, k, describe(e.val))
		}
		delete(f, k)
	}
	given := map[*keyGroup]string{}
	for i := range spec.groups {
		g := &spec.groups[i]
		var present []string
		for _, k := range g.keys {
			if _, ok := f[k]; ok && (slices.Contains(allowed, k) || slices.Contains(allowed, g.canonical)) {
				present = append(present, k)
			}
		}
		if len(present) == 0 {
			continue
		}
		slices.SortFunc(present, func(a, b string) int {
			return f[a].key.Line*10000 + f[a].key.Column - f[b].key.Line*10000 - f[b].key.Column
		})
		first := present[0]
		for _, k := range present[1:] {
			hint := "keep one of " + strings.Join(present, ", ")
			if g.canonical != "" {
				hint = fmt.Sprintf("%q is an alias of %q; keep one of them", k, g.canonical)
				if k == g.canonical {
					hint = fmt.Sprintf("%q is an alias of %q; keep one of them", first, g.canonical)
				}
			}
			ps.atNode(f[k].key, hint, "%s: %s has both %q (line %d) and %q, which say the same thing", loc.owner, loc.field, first, f[first].key.Line, k)
			delete(f, k)
		}
		name := first
		if g.canonical != "" && first != g.canonical {
			f[g.canonical] = f[first]
			delete(f, first)
			name = g.canonical
		}
		given[g] = name
	}
	return given
}

// overrideGroups removes from an entry's tool the members of the groups a
// workbook call gives under another name: the call's key replaces the
// entry's (a call's `data` replaces an entry's `json`), where laying one
// over the other would leave both and fail at run time.
func overrideGroups(tool map[string]any, given map[*keyGroup]string) {
	for g, name := range given {
		for _, k := range g.keys {
			if k != name {
				delete(tool, k)
			}
		}
	}
}
