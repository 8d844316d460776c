package apierr

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the error-code table of docs/api.md from the catalogue")

const (
	apiDoc    = "../../docs/api.md"
	beginMark = "<!-- BEGIN GENERATED: error catalogue (internal/apierr) -->\n"
	endMark   = "<!-- END GENERATED -->\n"
)

// docs/api.md shows exactly the catalogue. With -update the test rewrites
// the table between the markers instead.
func TestDocIsCurrent(t *testing.T) {
	doc, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, beginMark)
	j := strings.Index(s, endMark)
	if i < 0 || j < i {
		t.Fatalf("docs/api.md has no %q ... %q section for the error codes", strings.TrimSpace(beginMark), strings.TrimSpace(endMark))
	}
	i += len(beginMark)
	if s[i:j] == Markdown() {
		return
	}
	if *update {
		if err := os.WriteFile(apiDoc, []byte(s[:i]+Markdown()+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("docs/api.md is out of date; regenerate the error-code table between the GENERATED markers with `go test ./internal/apierr -run TestDocIsCurrent -update`")
}

// Every Code constant is in the catalogue, once, in declaration order, so
// no code can be returned that the docs do not list.
func TestCatalogueIsComplete(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "apierr.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []Code
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for _, val := range v.Values {
				lit, ok := val.(*ast.BasicLit)
				if !ok {
					t.Fatalf("a Code constant is not a string literal: %T", val)
				}
				s, _ := strconv.Unquote(lit.Value)
				declared = append(declared, Code(s))
			}
		}
	}
	if len(declared) != len(catalogue) {
		t.Fatalf("%d Code constants but %d catalogue entries; add every code to the catalogue", len(declared), len(catalogue))
	}
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	seen := map[Code]bool{}
	for i, e := range catalogue {
		if e.Code != declared[i] {
			t.Errorf("catalogue entry %d is %q, the const block has %q: keep them in the same order", i, e.Code, declared[i])
		}
		if seen[e.Code] {
			t.Errorf("code %q is in the catalogue twice", e.Code)
		}
		seen[e.Code] = true
		if !snake.MatchString(string(e.Code)) {
			t.Errorf("code %q is not snake_case", e.Code)
		}
		if e.Status < 400 || http.StatusText(e.Status) == "" {
			t.Errorf("code %q has status %d, not an HTTP error status", e.Code, e.Status)
		}
		if e.Meaning == "" || strings.ContainsAny(e.Meaning, "|\n") {
			t.Errorf("code %q: meaning %q must be one line without '|'", e.Code, e.Meaning)
		}
		if e.Code.Status() != e.Status {
			t.Errorf("%q.Status() = %d, want %d", e.Code, e.Code.Status(), e.Status)
		}
	}
	if Code("no_such_code").Status() != http.StatusInternalServerError {
		t.Error("a code outside the catalogue must answer 500")
	}
}
