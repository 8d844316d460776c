package bench

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

func TestSameRows(t *testing.T) {
	t.Parallel()
	cols := []api.Column{{Name: "d"}, {Name: "v"}}
	page := func(d string, v any) api.QueryPage {
		return api.QueryPage{Columns: cols, Rows: []map[string]any{{"d": d, "v": v}}}
	}
	cases := []struct {
		name string
		a, b api.QueryPage
		want bool
	}{
		{"float rounding of a re-aggregated sum", page("x", json.Number("132243.05000000002")), page("x", json.Number("132243.05")), true},
		{"decimal string and number", page("x", "12.5"), page("x", json.Number("12.5")), true},
		{"a real difference", page("x", json.Number("10")), page("x", json.Number("10.001")), false},
		{"another dimension value", page("x", json.Number("1")), page("y", json.Number("1")), false},
		{"null against zero", page("x", nil), page("x", json.Number("0")), false},
		{"a missing row", page("x", 1.0), api.QueryPage{Columns: cols}, false},
	}
	for _, c := range cases {
		if got, why := sameRows(c.a, c.b); got != c.want {
			t.Errorf("%s: sameRows = %v (%s), want %v", c.name, got, why, c.want)
		}
	}
}

// TestRunPreaggSmoke runs `millrace bench preagg` small, on both paths, for
// correctness only: every dashboard query must be a hit and equal to the
// warehouse's answer. Timings are not asserted (benchmarks.md has them).
func TestRunPreaggSmoke(t *testing.T) {
	t.Parallel()
	for _, nats := range []bool{false, true} {
		t.Run(map[bool]string{false: "in-process", true: "nats"}[nats], func(t *testing.T) {
			t.Parallel()
			warehouse := pgtest.NewSchema(t) // a URL selecting a fresh schema
			res, err := RunPreagg(t.Context(), PreaggOptions{
				Warehouse: warehouse, Rows: 20_000, Reps: 1,
				Store: "sqlite:" + filepath.Join(t.TempDir(), "bench.db"), NATSEnabled: nats, Timeout: 5 * time.Minute,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Differ != 0 || res.Misses != 0 || len(res.Queries) != len(preaggQueries()) {
				t.Fatalf("differ %d, misses %d, queries %d: %+v", res.Differ, res.Misses, len(res.Queries), res.Queries)
			}
			for _, b := range res.Builds {
				if b.Rows == 0 {
					t.Errorf("build %s/%s is empty", b.Model, b.PreAggregate)
				}
			}
		})
	}
}
