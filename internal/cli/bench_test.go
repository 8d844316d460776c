package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// The CI smoke run through the command line: a self-contained run on
// SQLite that must lose nothing and print valid JSON.
func TestBenchFlowsJSON(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs([]string{"bench", "flows", "--store", "sqlite:" + filepath.Join(t.TempDir(), "bench.db"),
		"--executions", "50", "--concurrency", "8", "--steps", "2", "--json"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("bench flows: %v\nstderr:\n%s", err, errOut.String())
	}
	var res struct {
		Executions    int    `json:"executions"`
		Completed     int    `json:"completed"`
		Incomplete    int    `json:"incomplete"`
		Steps         int    `json:"steps"`
		Target        string `json:"target"`
		Redeliveries  *int64 `json:"redeliveries"`
		SubmitToStart struct {
			Samples int `json:"samples"`
		} `json:"submit_to_start"`
		ExecutionsPerS float64 `json:"executions_per_second"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if res.Executions != 50 || res.Completed != 50 || res.Incomplete != 0 || res.Steps != 2 || res.Target != "sqlite" {
		t.Fatalf("result = %+v, want 50 of 50 two-step executions completed on sqlite", res)
	}
	if res.Redeliveries == nil || res.SubmitToStart.Samples != 50 || res.ExecutionsPerS <= 0 {
		t.Fatalf("result = %+v, want redeliveries read, 50 start samples, a positive rate", res)
	}
	if !strings.Contains(errOut.String(), "submitted 50/50") {
		t.Errorf("stderr lacks the final progress line:\n%s", errOut.String())
	}
}

func TestBenchFlowsNeedsATarget(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	root := NewRoot(&out, &errOut)
	root.SetArgs([]string{"bench", "flows"})
	err := root.ExecuteContext(t.Context())
	if err == nil || !strings.Contains(err.Error(), "--server URL") || !strings.Contains(err.Error(), "--store") {
		t.Fatalf("err = %v, want it to name --server and --store", err)
	}
	if out.Len() != 0 {
		t.Fatalf("stdout = %q, want nothing", out.String())
	}
}
