package wait

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	err := Poll(5*time.Second, func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n.Load() != 3 {
		t.Fatalf("err=%v after %d calls, want nil after 3", err, n.Load())
	}
}

func TestPollGivesTheLastReasonAtTheDeadline(t *testing.T) {
	t.Parallel()
	start := time.Now()
	err := Poll(100*time.Millisecond, func() error { return errors.New("still down") })
	if err == nil || err.Error() != "still down" {
		t.Fatalf("err = %v, want the condition's last error", err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("gave up after %v, before the deadline", el)
	}
}

type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
}

func TestUntilFailsTheTestNamingTheCondition(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	Until(r, 50*time.Millisecond, "the queue drained", func() bool { return false })
	if r.failed == "" {
		t.Fatal("Until did not fail the test on a condition that never held")
	}
}
