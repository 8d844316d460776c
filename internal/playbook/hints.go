package playbook

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// keyMeanings say what a key means where it belongs, for when it is written
// somewhere else: an edit-distance "did you mean" would point at an
// unrelated construct (`to` is one edit from `do` and two from `tool`).
var keyMeanings = map[string]string{
	"to":   "`to` is a jump target: it belongs in a task's policy rule as `then: {do: jump, to: <task>}`; an arc names the step it goes to with `step:`",
	"pool": "`pool` routes a whole step to a worker pool: write it on the step, beside `tool` (`- step: train` / `pool: gpu`); the tasks of a step run in one command, on one worker",
}

// keyHint is the hint for an unknown key of a tool of kind ("" outside a
// tool), or "" to fall back to "did you mean" over known: the key's meaning
// where it belongs, a near NoETL alias of kind's keys (aliases are not in
// known, since the parser renames them first), or the tool kinds that take
// the key as an alias.
func keyHint(kind, key string, known []string) string {
	if m := keyMeanings[key]; m != "" {
		return m
	}
	if kind == "" {
		return ""
	}
	var aliases []string
	canon := map[string]string{}
	for _, g := range toolKeyTable[kind].groups {
		for _, k := range g.keys {
			if k != g.canonical && !slices.Contains(known, k) {
				aliases = append(aliases, k)
				canon[k] = g.canonical
			}
		}
	}
	if s := nearest(key, aliases); s != "" && nearest(key, known) == "" {
		if canon[s] == "" {
			return fmt.Sprintf("did you mean %q?", s)
		}
		return fmt.Sprintf("did you mean %q (NoETL's alias of %q)?", s, canon[s])
	}
	var elsewhere []string
	for k, spec := range toolKeyTable {
		if k == kind {
			continue
		}
		for _, g := range spec.groups {
			if g.canonical != "" && g.canonical != key && slices.Contains(g.keys, key) {
				elsewhere = append(elsewhere, fmt.Sprintf("a %s tool's alias of %q", k, g.canonical))
			}
		}
	}
	if len(elsewhere) == 0 {
		return ""
	}
	sort.Strings(elsewhere)
	return fmt.Sprintf("%q is %s; allowed keys here: %s", key, strings.Join(elsewhere, " and "), strings.Join(known, ", "))
}
