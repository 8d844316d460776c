// Package wait is the one poll-with-a-deadline helper the tests share, after
// nats-server's checkFor: a test waits for a condition, never for a fixed
// time, and a condition that never holds fails the test with its last
// reason instead of hanging.
package wait

import (
	"errors"
	"testing"
	"time"
)

// Every is how often For re-checks a condition.
const Every = 20 * time.Millisecond

// For calls cond until it returns nil, failing t with cond's last error if
// that has not happened within d.
func For(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(d, cond); err != nil {
		t.Fatalf("not within %s: %v", d, err)
	}
}

// Until is For for a condition without a reason: what names it in the
// failure.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	For(t, d, func() error {
		if cond() {
			return nil
		}
		return errors.New(what)
	})
}

// Poll calls cond until it returns nil or d has passed, and returns cond's
// last error (nil on success). It is for code that decides itself what a
// timeout means.
func Poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	t := time.NewTicker(Every)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		<-t.C
	}
}
