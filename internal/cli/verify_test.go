package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/sqlitedriver"
	"github.com/millrace/millrace/internal/verify"
)

// millrace verify: 0 on a consistent store, 1 with the violation's ids
// (text and JSON), 2 on a usage or connection error.
func TestVerifyExitCodesAndJSON(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "millrace.db")
	drv, err := sqlitedriver.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	if err := drv.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	url := "sqlite:" + path

	run1 := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), append([]string{"verify", "--database-url", url}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, out, errOut := run1(); code != 0 || !strings.Contains(out, "every invariant holds") {
		t.Fatalf("empty store: exit %d, out %q, err %q; want 0 and ok", code, out, errOut)
	}

	// An execution that failed without its playbook.failed event.
	gen := ids.New(-1)
	now := time.Now().UTC().Truncate(time.Microsecond)
	execID := gen.Next()
	tx, err := drv.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cat, err := tx.CatalogInsert(t.Context(), gen.Next(), "flows/x", "x", "steps: []", now)
	if err == nil {
		err = tx.ExecutionInsert(t.Context(), store.Execution{ExecutionID: execID, CatalogID: cat.CatalogID, Path: cat.Path, Version: cat.Version,
			Status: api.ExecRunning, StartedAt: now})
	}
	if err == nil {
		err = tx.ExecutionFinish(t.Context(), execID, api.ExecFailed, nil, "boom", now)
	}
	if err == nil {
		err = tx.Commit(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}

	code, out, _ := run1("--json")
	if code != 1 {
		t.Fatalf("violation: exit %d, want 1; out %s", code, out)
	}
	var rep verify.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json printed %q: %v", out, err)
	}
	if rep.OK || len(rep.Violations) != 1 || rep.Violations[0].Check != store.CheckTerminalEvent ||
		rep.Violations[0].ExecutionID != execID || rep.Checked["executions"] != 1 {
		t.Fatalf("report = %+v, want one %s violation of execution %d and 1 execution checked", rep, store.CheckTerminalEvent, execID)
	}
	if code, out, _ := run1(); code != 1 || !strings.Contains(out, "terminal_event") || !strings.Contains(out, "FAILED") {
		t.Fatalf("text: exit %d, out %q", code, out)
	}
	if code, out, _ := run1("--since", "1h", "--json"); code != 1 || !strings.Contains(out, `"ok": false`) {
		t.Fatalf("--since 1h: exit %d, out %q; want the execution started now", code, out)
	}

	for _, args := range [][]string{{"--since", "yesterday"}, {"--no-such-flag"}, {"--limit", "-1"}} {
		if code, _, errOut := run1(args...); code != verifyUsage {
			t.Errorf("verify %v: exit %d (%s), want %d", args, code, errOut, verifyUsage)
		}
	}
	var out2, errOut2 bytes.Buffer
	if code := run(t.Context(), []string{"verify", "--database-url", "mysql://nope"}, &out2, &errOut2); code != verifyUsage {
		t.Errorf("unsupported store: exit %d (%s), want %d", code, errOut2.String(), verifyUsage)
	}
}
