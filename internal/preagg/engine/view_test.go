//go:build cgo

package engine

import (
	"strings"
	"testing"
)

func TestWithView(t *testing.T) {
	t.Parallel()
	got := withView("SELECT * FROM preagg", []string{"/a/x.parquet", "/b/it's.parquet"})
	want := `WITH "preagg" AS (SELECT * FROM read_parquet(['/a/x.parquet', '/b/it''s.parquet'], union_by_name = true))` + "\nSELECT * FROM preagg"
	if got != want {
		t.Fatalf("withView =\n%s\nwant\n%s", got, want)
	}
	// A plan that has CTEs of its own gets the view as the first of them.
	got = withView("  with t AS (SELECT 1) SELECT * FROM preagg, t", []string{"/x.parquet"})
	if !strings.HasPrefix(got, `WITH "preagg" AS (`) || !strings.HasSuffix(got, "), t AS (SELECT 1) SELECT * FROM preagg, t") {
		t.Fatalf("withView with a CTE = %s", got)
	}
}
