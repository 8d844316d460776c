package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// verifyReport is what `millrace verify --json` prints.
type verifyReport struct {
	OK         bool             `json:"ok"`
	Checked    map[string]int64 `json:"checked"`
	Violations []verifyProblem  `json:"violations"`
}

type verifyProblem struct {
	Check       string `json:"check"`
	ExecutionID int64  `json:"execution_id"`
	CommandID   int64  `json:"command_id"`
	Detail      string `json:"detail"`
}

// verifyReapInterval is the --reap-interval the oracle judges pending
// notifications by: well above the stack's MILLRACE_REAP_INTERVAL_SECONDS
// (0.5 s), so a loaded CI machine is not read as a stuck reaper.
const verifyReapInterval = "10s"

// verifyStore is the oracle: `millrace verify --json` over the store at
// dbURL, the same command an operator runs after an incident. It fails t
// when verify cannot run (exit 2); violations (exit 1) are returned for
// Check to report.
func verifyStore(t *testing.T, dbURL string) verifyReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "verify", "--database-url", dbURL, "--json", "--limit", "0", "--reap-interval", verifyReapInterval)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("millrace verify: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var rep verifyReport
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("millrace verify --json printed no report (%v): %s%s", jerr, stdout.String(), stderr.String())
	}
	if (err == nil) != rep.OK {
		t.Fatalf("millrace verify exited %v with ok=%v", err, rep.OK)
	}
	return rep
}
