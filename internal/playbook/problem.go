package playbook

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a playbook, located at a line and column
// of the source file. Line or Col is 0 when the YAML library did not report it.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"` // 1-based; 0 when the problem has no position
	Col  int    `json:"col,omitempty"`
	Msg  string `json:"message"`
	Hint string `json:"hint,omitempty"`
	// Warning marks something NoETL runs as written but that is likely a
	// mistake (an unreachable step); it does not stop a playbook.
	Warning bool `json:"warning,omitempty"`
}

// Error renders the problem as "file:line:col: msg (hint: ...)", the format
// editors and CI annotators recognise.
func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Col > 0 {
			fmt.Fprintf(&b, ":%d", p.Col)
		}
	}
	b.WriteString(": ")
	if p.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Msg)
	if p.Hint != "" {
		b.WriteString(" (hint: ")
		b.WriteString(p.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Problems is every problem found in a playbook, in source order. Parse
// reports them all at once so a user fixes a file in one round trip.
type Problems []Problem

// Error renders one problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Col < ps[j].Col
	})
}

// Sort orders problems by file, line and column, as Parse reports them.
func (ps Problems) Sort() { ps.sort() }
