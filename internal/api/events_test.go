package api

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docs/api.md's table of event types lists exactly the Ev constants.
func TestEventTypesAreDocumented(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "events.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			for i, name := range v.Names {
				if !strings.HasPrefix(name.Name, "Ev") || i >= len(v.Values) {
					continue
				}
				lit, ok := v.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				s, _ := strconv.Unquote(lit.Value)
				consts = append(consts, s)
			}
		}
	}
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "### Event types\n")
	if i < 0 {
		t.Fatal(`docs/api.md has no "### Event types" section`)
	}
	s = s[i+1:]
	if j := strings.Index(s, "\n#"); j >= 0 {
		s = s[:j]
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+\\.[a-z_]+)` \\|").FindAllStringSubmatch(s, -1) {
		documented = append(documented, m[1])
	}
	for _, c := range consts {
		if !slices.Contains(documented, c) {
			t.Errorf("event type %q (internal/api/events.go) is missing from the table in docs/api.md", c)
		}
	}
	for i, d := range documented {
		if !slices.Contains(consts, d) {
			t.Errorf("docs/api.md documents event type %q, which internal/api/events.go does not declare", d)
		}
		if slices.Contains(documented[:i], d) {
			t.Errorf("docs/api.md documents event type %q twice", d)
		}
	}
	if len(consts) == 0 {
		t.Fatal("found no Ev constants in events.go")
	}
}
