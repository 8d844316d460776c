package helm_test

import (
	"os"
	"regexp"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
)

// The production values file docs/operations.md gives a platform team to
// paste renders under the schema, decodes strictly and lints clean: the
// guide cannot drift from the chart's values.
func TestOperationsGuideValues(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)`values-production\\.yaml`[^`]*?```yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/operations.md has no ```yaml block after `values-production.yaml`")
	}
	vals := values(t, string(m[1]))
	mf := mustRender(t, vals)
	if len(mf.all) == 0 {
		t.Fatal("the guide's values render nothing")
	}
	for _, msg := range lint.RunAll(chartDir, values(t, string(m[1])), namespace).Messages {
		if msg.Severity >= support.WarningSev {
			t.Errorf("lint of the guide's values: %s", msg)
		}
	}
}
