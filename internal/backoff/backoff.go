// Package backoff is the one retry-delay rule every loop in Millrace uses:
// exponential growth from Min to a cap of Max, with jitter, so that a fleet
// of workers or servers that lost the same dependency at the same moment do
// not come back in lockstep and hit it together.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff hands out successive delays. The zero value is not useful: set
// Min and Max. It is not safe for concurrent use; each loop owns one.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the delay before the next attempt and advances.
func (b *Backoff) Next() time.Duration {
	d := Delay(b.n, b.Min, b.Max)
	b.n++
	return d
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Attempts is how many delays were handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.n }

// Delay is the jittered delay before retry number attempt (0-based):
// min·2^attempt capped at max, then drawn uniformly from its upper half
// ("equal jitter"), so a delay never drops below half the schedule and a
// retry storm still spreads out.
func Delay(attempt int, min, max time.Duration) time.Duration {
	if min <= 0 {
		min = time.Millisecond
	}
	if max < min {
		max = min
	}
	d := min
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = minDur(d, max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits for d or until ctx ends; it reports whether the full delay
// passed (false: the caller should stop retrying).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func minDur(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
