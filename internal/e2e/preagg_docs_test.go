package e2e

import (
	"os"
	"strings"
	"testing"
)

// docs/preaggregates.md exists and covers what issue 11 asks of it; its
// ```sh blocks (the curl examples) are run against `millrace dev` by
// TestDocExamples, like every other doc's, and this test checks there are
// such blocks for it to run.
func TestPreAggDocs(t *testing.T) {
	t.Parallel()
	path := repoFile(t, "docs/preaggregates.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("docs/preaggregates.md is missing (%v): issue 11 requires it, with curl examples that work against `millrace dev`", err)
	}
	doc := string(data)
	var sh []docBlock
	for _, b := range docBlocks(t, path) {
		if b.lang() == "sh" && !strings.Contains(b.info, "slow") {
			sh = append(sh, b)
		}
	}
	var all strings.Builder
	for _, b := range sh {
		all.WriteString(b.body)
	}
	examples := all.String()
	for _, want := range []string{"curl", "/models", "/query/metric-query", "/preaggregates"} {
		if !strings.Contains(examples, want) {
			t.Errorf("no ```sh example of docs/preaggregates.md uses %q (TestDocExamples runs them against millrace dev)", want)
		}
	}
	for _, want := range []string{
		"PRE_AGGREGATES_ENABLED", "PRE_AGGREGATE_DUCKDB_QUERY_MEMORY_LIMIT", "PRE_AGGREGATES_MAX_ROWS",
		"PRE_AGGREGATE_STORAGE", "PRE_AGGREGATE_BUILD_CONCURRENCY",
		"millrace worker --stream pre-aggregate", "partition_by", "update_window", "key_sql", "max_staleness",
		"usePreAggregates",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/preaggregates.md does not mention %s", want)
		}
	}
	// Every miss reason a client can see is explained.
	for _, code := range []string{"PRE_AGGREGATES_DISABLED", "BYPASSED", "NO_PRE_AGGREGATES", "CUSTOM_SQL_METRIC", "FIELD_NOT_COVERED",
		"GRAIN_NOT_DERIVABLE", "NON_ADDITIVE_NEEDS_EXACT_MATCH", "FILTER_OUT_OF_SCOPE", "NO_ACTIVE_MATERIALIZATION", "BUILD_TOO_STALE",
		"MATERIALIZATION_MISSING"} {
		if !strings.Contains(doc, code) {
			t.Errorf("docs/preaggregates.md does not explain the miss reason %s", code)
		}
	}
}
