package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/preaggtest"
)

// cliRun runs the command line against the stack's server and returns its
// exit code, standard output and standard error.
func cliRun(t *testing.T, s *preaggtest.Stack, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(t.Context(), append(args, "--server", s.H.Srv.URL(), "--project", s.Project), &out, &errOut)
	return code, out.String(), errOut.String()
}

// The pre-aggregate commands and metric queries against a running server
// with a pre-aggregate worker: refresh --wait, list, status, query --metric
// with its hit/miss line (table and --json), and audit of a file and of the
// history, with --fail-on-miss.
func TestPreAggCommands(t *testing.T) {
	t.Parallel()
	s := preaggtest.Start(t, preaggtest.Options{})
	first := s.WaitActive(t, "orders", "daily_status", "")

	code, out, errOut := cliRun(t, s, "preagg", "refresh", "orders/daily_status", "--wait")
	if code != 0 || !strings.Contains(out, " active: ") || !strings.Contains(errOut, "queued") {
		t.Fatalf("refresh --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	code, _, errOut = cliRun(t, s, "preagg", "refresh", "orders/nope")
	if code == 0 || !strings.Contains(errOut, "preaggregate_not_found") || !strings.Contains(errOut, "nope") {
		t.Fatalf("refresh of an undeclared pre-aggregate: exit %d, %s", code, errOut)
	}

	code, out, errOut = cliRun(t, s, "preagg", "list")
	if code != 0 || !strings.Contains(out, "DATA AS OF") || !strings.Contains(out, "orders") || !strings.Contains(out, "daily_status") || !strings.Contains(out, "yes") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cliRun(t, s, "preagg", "list", "--json")
	var list api.PreAggList
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.PreAggregates) != 1 || list.PreAggregates[0].Active == nil ||
		list.PreAggregates[0].Active.BuildUUID == first.BuildUUID {
		t.Fatalf("list --json: exit %d, %v\n%s; want the refreshed build active", code, err, out)
	}

	code, out, _ = cliRun(t, s, "preagg", "status", "orders/daily_status")
	if code != 0 || !strings.Contains(out, "orders/daily_status serving: build") || strings.Count(out, "daily_status  ") < 2 || !strings.Contains(out, "superseded") {
		t.Fatalf("status: exit %d\n%s; want the serving line and both builds (one superseded)", code, out)
	}

	// A hit, in a table with its line after it.
	code, out, errOut = cliRun(t, s, "query", "--explore", "orders", "--dimensions", "orders_status", "--metrics", "orders_order_count", "--wait")
	if code != 0 || !strings.Contains(out, "ORDERS_ORDER_COUNT") || !strings.Contains(out, "(3 rows)") || !strings.Contains(out, "pre-aggregate: hit daily_status (build ") {
		t.Fatalf("query --metric hit: exit %d\n%s\n%s", code, out, errOut)
	}
	// A miss says why.
	code, out, errOut = cliRun(t, s, "query", "--explore", "orders", "--dimensions", "orders_note", "--metrics", "orders_order_count",
		"--filter", "orders_status = paid,shipped", "--wait")
	if code != 0 || !strings.Contains(out, "pre-aggregate: miss FIELD_NOT_COVERED") || !strings.Contains(out, "orders_note") {
		t.Fatalf("query --metric miss: exit %d\n%s\n%s", code, out, errOut)
	}
	// --json: one object with the metadata and the rows.
	code, out, _ = cliRun(t, s, "query", "--explore", "orders", "--metrics", "orders_revenue", "--filter", "orders_status equals paid", "--wait", "--json")
	var res struct {
		CacheMetadata api.CacheMetadata `json:"cacheMetadata"`
		Rows          []map[string]any  `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.CacheMetadata.PreAggregate == nil || !res.CacheMetadata.PreAggregate.Hit || len(res.Rows) != 1 {
		t.Fatalf("query --metric --json: exit %d, %v\n%s", code, err, out)
	}
	// An unknown field is the server's 400, naming it.
	code, out, errOut = cliRun(t, s, "query", "--explore", "orders", "--metrics", "orders_nope", "--wait")
	if code == 0 || !strings.Contains(errOut, "orders_nope") {
		t.Fatalf("unknown field: exit %d\n%s%s", code, out, errOut)
	}

	// Audit a file: one query hits, one misses (and one is named).
	file := filepath.Join(t.TempDir(), "queries.json")
	queries := `[{"name": "by status", "query": {"exploreName": "orders", "dimensions": ["orders_status"], "metrics": ["orders_order_count"]}},
	  {"exploreName": "orders", "dimensions": ["orders_note"], "metrics": ["orders_revenue"]}]`
	if err := os.WriteFile(file, []byte(queries), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = cliRun(t, s, "preagg", "audit", "--file", file)
	if code != 0 || !strings.Contains(out, "by status") || !strings.Contains(out, "HIT") || !strings.Contains(out, "#2") ||
		!strings.Contains(out, "MISS") || !strings.Contains(out, "2 metric queries: 1 served from a pre-aggregate, 1 missed") {
		t.Fatalf("audit --file: exit %d\n%s", code, out)
	}
	code, out, _ = cliRun(t, s, "preagg", "audit", "--file", file, "--fail-on-miss", "--json", "--wait")
	var rep auditReport
	if err := json.Unmarshal([]byte(out), &rep); code != 1 || err != nil || rep.Hits != 1 || rep.Misses != 1 || rep.Queries[1].PreAggregate.Reason.Code != api.PreAggMissFieldNotCovered {
		t.Fatalf("audit --fail-on-miss --json: exit %d (want 1), %v\n%s", code, err, out)
	}
	// Only hits: --fail-on-miss passes.
	if err := os.WriteFile(file, []byte(`{"queries": [{"exploreName": "orders", "metrics": ["orders_order_count"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ = cliRun(t, s, "preagg", "audit", "--file", file, "--fail-on-miss"); code != 0 {
		t.Fatalf("audit of hits only: exit %d\n%s", code, out)
	}

	// The history: every metric query above, SQL ones left out.
	if _, err := s.H.API.QuerySubmit(t.Context(), s.Project, "select 1", "interactive", false); err != nil {
		t.Fatal(err)
	}
	code, out, _ = cliRun(t, s, "preagg", "audit", "--history", "50", "--json", "--fail-on-miss")
	if err := json.Unmarshal([]byte(out), &rep); code != 1 || err != nil || rep.Hits < 5 || rep.Misses < 2 || len(rep.Queries) != rep.Hits+rep.Misses {
		t.Fatalf("audit --history: exit %d, %v\n%s", code, err, out)
	}
	for _, q := range rep.Queries {
		if q.Explore != "orders" || q.QueryUUID == "" {
			t.Fatalf("audit --history entry %+v; want the explore and uuid of each metric query", q)
		}
	}
}
