package server_test

import (
	"strings"
	"testing"
)

// Registering a playbook with an unreachable step succeeds (NoETL runs such
// playbooks) and the API response carries the warning with its line.
func TestRegisterReturnsWarnings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r, err := b.API.Register(t.Context(), oneStep+"  - step: orphan\n    tool: {kind: noop}\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) != 1 || !r.Warnings[0].Warning || r.Warnings[0].Line == 0 ||
		!strings.Contains(r.Warnings[0].Msg, `step "orphan" is unreachable`) {
		t.Fatalf("warnings = %+v, want the unreachable step", r.Warnings)
	}
	r, err = b.API.Register(t.Context(), oneStep)
	if err != nil || len(r.Warnings) != 0 {
		t.Fatalf("register = %+v, %v; want no warnings", r, err)
	}
}
