package errkind_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/millrace/millrace/internal/errkind"
)

func TestErrorfMatchesItsKindAndReadsAsItsMessage(t *testing.T) {
	t.Parallel()
	errGone := errors.New("gone")
	err := errkind.Errorf(errGone, "execution %d has ended", 42)
	if !errors.Is(err, errGone) {
		t.Fatalf("errors.Is(%v, errGone) = false", err)
	}
	if got := err.Error(); got != "execution 42 has ended" {
		t.Fatalf("Error() = %q, want the message alone", got)
	}
	if wrapped := fmt.Errorf("claim: %w", err); !errors.Is(wrapped, errGone) {
		t.Fatal("the kind is lost when the error is wrapped again")
	}
}
