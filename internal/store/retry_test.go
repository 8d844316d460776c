package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/store"
)

var errTransient = errors.New("deadlock detected")

// retryingDriver calls errTransient transient, as pgdriver does deadlocks.
type retryingDriver struct{ store.Driver }

func (retryingDriver) Retryable(err error) bool { return errors.Is(err, errTransient) }

func TestDoRetriesTransientErrors(t *testing.T) {
	t.Parallel()
	st := store.New(retryingDriver{drivers(t)["sqlite"](t)}, store.Options{})
	t.Cleanup(func() { st.Close() })
	ctx := t.Context()

	// Two transient failures, then success: three runs, spaced out.
	var runs []time.Time
	err := st.Do(ctx, 1, func(context.Context, store.Tx) error {
		runs = append(runs, time.Now())
		if len(runs) < 3 {
			return errTransient
		}
		return nil
	})
	if err != nil || len(runs) != 3 {
		t.Fatalf("Do = %v after %d runs; want success on the third", err, len(runs))
	}
	for i := 1; i < len(runs); i++ {
		if gap := runs[i].Sub(runs[i-1]); gap < 5*time.Millisecond {
			t.Errorf("run %d came %v after run %d; want a backoff of at least 5ms", i+1, gap, i)
		}
	}

	// Still failing after three runs: the transient error, no fourth run.
	n := 0
	err = st.Do(ctx, 1, func(context.Context, store.Tx) error { n++; return errTransient })
	if !errors.Is(err, errTransient) || n != 3 {
		t.Fatalf("Do = %v after %d runs; want errTransient after 3", err, n)
	}

	// Anything else is the caller's error: one run.
	n = 0
	other := errors.New("constraint")
	err = st.Do(ctx, 1, func(context.Context, store.Tx) error { n++; return other })
	if !errors.Is(err, other) || n != 1 {
		t.Fatalf("Do = %v after %d runs; want the error after one", err, n)
	}

	// A caller that gives up while waiting to retry gets the error back at once.
	cctx, cancel := context.WithCancel(ctx)
	n = 0
	err = st.Do(cctx, 1, func(context.Context, store.Tx) error { n++; cancel(); return errTransient })
	if !errors.Is(err, errTransient) || n != 1 {
		t.Fatalf("Do = %v after %d runs; want errTransient after one when the caller gave up", err, n)
	}
}
