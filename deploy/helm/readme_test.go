package helm_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// The README's values table lists exactly the keys values.yaml documents
// (a "# --" comment), with their defaults, so it cannot drift from the
// chart.
func TestReadmeValuesTable(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	documented := map[string]bool{}
	var walk func(n *yamlv3.Node, prefix string)
	walk = func(n *yamlv3.Node, prefix string) {
		if n.Kind != yamlv3.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := prefix + k.Value
			if strings.Contains(k.HeadComment, "# --") {
				documented[path] = true
			}
			walk(v, path+".")
		}
	}
	walk(doc.Content[0], "")
	if len(documented) == 0 {
		t.Fatal("values.yaml documents no key with a \"# --\" comment")
	}
	var defaults map[string]any
	if err := yaml.Unmarshal(raw, &defaults); err != nil {
		t.Fatal(err)
	}

	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "<!-- BEGIN values table")
	table, _, ok2 := strings.Cut(table, "<!-- END values table -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- BEGIN values table … --> … <!-- END values table --> section")
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| `(.*)` \\| ")
	listed := map[string]bool{}
	for _, r := range row.FindAllStringSubmatch(table, -1) {
		key, def := r[1], r[2]
		listed[key] = true
		if !documented[key] {
			t.Errorf("README.md lists %s, which values.yaml does not document (or has no longer)", key)
			continue
		}
		if def == "(see values.yaml)" {
			continue
		}
		var got any
		if err := json.Unmarshal([]byte(def), &got); err != nil {
			t.Errorf("README.md: the default of %s, %s, is not JSON: %v", key, def, err)
			continue
		}
		if want := lookupValue(defaults, key); !reflect.DeepEqual(got, want) {
			t.Errorf("README.md: %s defaults to %s, values.yaml to %v; update the values table", key, def, want)
		}
	}
	for key := range documented {
		if !listed[key] {
			t.Errorf("values.yaml documents %s, but README.md's values table does not list it; add its row", key)
		}
	}
}
