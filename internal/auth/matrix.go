package auth

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Route is one served route and who may use it.
type Route struct {
	Pattern string // "METHOD /path/{param}"
	Access  Access
}

// Method and Path split the route's pattern.
func (r Route) Method() string { m, _, _ := strings.Cut(r.Pattern, " "); return m }

// Path is the pattern's path.
func (r Route) Path() string { _, p, _ := strings.Cut(r.Pattern, " "); return p }

// Matrix renders routes as the route × role table of docs/security.md:
// one row per route (by path, then method), one column per role plus "no
// token".
func Matrix(routes []Route) string {
	rs := slices.Clone(routes)
	slices.SortStableFunc(rs, func(a, b Route) int {
		return cmp.Or(cmp.Compare(a.Path(), b.Path()), cmp.Compare(a.Method(), b.Method()))
	})
	var b strings.Builder
	b.WriteString("| method | path | no token |")
	for _, role := range Roles {
		fmt.Fprintf(&b, " %s |", role)
	}
	b.WriteString("\n|---|---|:-:|")
	b.WriteString(strings.Repeat(":-:|", len(Roles)))
	b.WriteString("\n")
	mark := func(ok bool) string {
		if ok {
			return "✓"
		}
		return "–"
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | `%s` | %s |", r.Method(), r.Path(), mark(r.Access.Public))
		for _, role := range Roles {
			fmt.Fprintf(&b, " %s |", mark(r.Access.Allows(role)))
		}
		b.WriteString("\n")
	}
	return b.String()
}
