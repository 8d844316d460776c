package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// Every error a domain package declares for its callers has an API code in
// domainCodes: one left out would reach clients as a 500 "internal error".
func TestEveryDomainErrorIsMapped(t *testing.T) {
	t.Parallel()
	mapped := map[string]bool{}
	ast.Inspect(parse(t, "errors.go"), func(n ast.Node) bool {
		if s, ok := n.(*ast.SelectorExpr); ok {
			if x, ok := s.X.(*ast.Ident); ok {
				mapped[x.Name+"."+s.Sel.Name] = true
			}
		}
		return true
	})
	for _, pkg := range []string{"flow", "query"} {
		n := 0
		for _, d := range parse(t, "../"+pkg+"/errors.go").Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, spec := range g.Specs {
				for _, name := range spec.(*ast.ValueSpec).Names {
					if !strings.HasPrefix(name.Name, "Err") {
						continue
					}
					n++
					if !mapped[pkg+"."+name.Name] {
						t.Errorf("%s.%s has no API code; add it to domainCodes in internal/server/errors.go", pkg, name.Name)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("found no Err variables in internal/%s/errors.go", pkg)
		}
	}
}

func parse(t *testing.T, file string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
