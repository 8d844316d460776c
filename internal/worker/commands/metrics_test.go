package commands_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millrace/millrace/internal/api"
)

// stepHistogram reads millrace_step_duration_seconds{tool,outcome}: the
// count and sum of its observations so far (0 when it has none).
func stepHistogram(t *testing.T, tool, outcome string) (uint64, float64) {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "millrace_step_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["tool"] == tool && labels["outcome"] == outcome {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

// The worker times each step's tool by kind and outcome. The histogram is
// the process's, shared with tests running in parallel, so the checks are
// on growth: at least this test's observations.
func TestStepDurationHistogram(t *testing.T) {
	t.Parallel()
	b := setup(t, 5*time.Second)
	okBefore, _ := stepHistogram(t, "duckdb", "completed")
	failBefore, failSumBefore := stepHistogram(t, "duckdb", "failed")
	ex := b.run(`apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: timed, path: w/timed}
workflow:
  - step: start
    tool: {kind: duckdb, commands: "SELECT 1"}
    next: {arcs: [{step: boom}]}
  - step: boom
    tool: {kind: duckdb, commands: "SELECT pg_sleep_is_not_a_function(0.3)"}
`, nil)
	if ex.Status != api.ExecFailed {
		t.Fatalf("execution %s (%s), want failed at step boom", ex.Status, ex.Error)
	}
	if n, _ := stepHistogram(t, "duckdb", "completed"); n < okBefore+1 {
		t.Errorf("duckdb completed observations %d, want at least %d", n, okBefore+1)
	}
	if n, sum := stepHistogram(t, "duckdb", "failed"); n < failBefore+1 || sum <= failSumBefore {
		t.Errorf("duckdb failed observations %d (sum %v), want at least %d (sum over %v)", n, sum, failBefore+1, failSumBefore)
	}
}
