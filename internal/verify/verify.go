// Package verify is `millrace verify`: it runs the invariant checks of
// store.Verifier over an event store and renders what they found, as text
// for an operator after an incident or as JSON for the fault tests'
// oracle. The checks themselves are SQL in the drivers (bounded memory:
// they aggregate in the database and return at most Limit rows each).
package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/millrace/millrace/internal/store"
)

// Report is what a run found. Its JSON is the contract the fault tests
// read: {"ok","checked","violations":[{"check","execution_id","command_id","detail"}]}.
type Report struct {
	OK bool `json:"ok"`
	// Checked counts the rows the checks read (executions, commands,
	// events, loops, outbox).
	Checked    map[string]int64 `json:"checked"`
	Violations []Violation      `json:"violations"`
	// Truncated names the checks that hit the limit: they may have more.
	Truncated []string `json:"truncated,omitempty"`
}

// Violation is one broken invariant; command_id is the command's event
// id (its key), 0 when the violation is not about one command.
type Violation struct {
	Check       string `json:"check"`
	ExecutionID int64  `json:"execution_id"`
	CommandID   int64  `json:"command_id"`
	Detail      string `json:"detail"`
}

// Run runs every check of store.VerifyChecks against v.
func Run(ctx context.Context, v store.Verifier, opts store.VerifyOptions) (Report, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now().UTC()
	}
	rep := Report{Violations: []Violation{}}
	var err error
	if rep.Checked, err = v.VerifyCounts(ctx, opts); err != nil {
		return Report{}, err
	}
	for _, check := range store.VerifyChecks {
		found, err := v.VerifyCheck(ctx, check, opts)
		if err != nil {
			return Report{}, fmt.Errorf("check %s: %w", check, err)
		}
		if opts.Limit > 0 && len(found) >= opts.Limit {
			rep.Truncated = append(rep.Truncated, check)
		}
		for _, f := range found {
			rep.Violations = append(rep.Violations, Violation{Check: f.Check, ExecutionID: f.ExecutionID, CommandID: f.CommandID, Detail: f.Detail})
		}
	}
	rep.OK = len(rep.Violations) == 0
	return rep, nil
}

// WriteJSON writes rep as one JSON document.
func (rep Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes rep for a person: what was read, then one line per
// violation, then the verdict.
func (rep Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "checked  %d executions, %d commands, %d events, %d loops, %d outbox rows\n",
		rep.Checked["executions"], rep.Checked["commands"], rep.Checked["events"], rep.Checked["loops"], rep.Checked["outbox"])
	for _, v := range rep.Violations {
		fmt.Fprintf(w, "%-24s execution %d", v.Check, v.ExecutionID)
		if v.CommandID != 0 {
			fmt.Fprintf(w, " command %d", v.CommandID)
		}
		fmt.Fprintf(w, ": %s\n", v.Detail)
	}
	for _, c := range rep.Truncated {
		fmt.Fprintf(w, "%-24s more violations than --limit; raise it to see them all\n", c)
	}
	if rep.OK {
		fmt.Fprintln(w, "ok       every invariant holds")
		return
	}
	fmt.Fprintf(w, "FAILED   %d violation(s); see docs/operations.md#verify for what each check means\n", len(rep.Violations))
}
