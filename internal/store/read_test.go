package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/millrace/millrace/internal/store"
)

// fakeReader runs fn with no Querier, or fails before running it.
type fakeReader struct{ err error }

func (r fakeReader) Read(ctx context.Context, fn func(q store.Querier) error) error {
	if r.err != nil {
		return r.err
	}
	return fn(nil)
}

func TestReadValue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	n, err := store.ReadValue(ctx, fakeReader{}, func(store.Querier) (int, error) { return 7, nil })
	if n != 7 || err != nil {
		t.Fatalf("ReadValue = %d, %v; want 7, nil", n, err)
	}
	boom := errors.New("boom")
	n, err = store.ReadValue(ctx, fakeReader{}, func(store.Querier) (int, error) { return 0, boom })
	if n != 0 || !errors.Is(err, boom) {
		t.Fatalf("ReadValue = %d, %v; want fn's error", n, err)
	}
	n, err = store.ReadValue(ctx, fakeReader{err: store.ErrClosed}, func(store.Querier) (int, error) {
		t.Fatal("fn ran although Read failed first")
		return 1, nil
	})
	if n != 0 || !errors.Is(err, store.ErrClosed) {
		t.Fatalf("ReadValue = %d, %v; want the zero value and Read's error", n, err)
	}
}

// TestReadInsideDoIsRefused: a pool read (or a nested Do) inside a Do
// function would hold one connection while waiting for another; with every
// committer doing so a small pool deadlocks until the batch times out. Both
// say so at once, alone or in a shared batch, and a read outside Do works.
func TestReadInsideDoIsRefused(t *testing.T) {
	t.Parallel()
	for name, open := range drivers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, open)
			ctx := t.Context()
			concurrently(8, func(int) {
				err := b.st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error {
					return b.st.Read(ctx, func(q store.Querier) error { return nil })
				})
				if !errors.Is(err, store.ErrReadInTx) {
					t.Errorf("Read inside Do = %v, want ErrReadInTx", err)
				}
				err = b.st.Do(ctx, 2, func(ctx context.Context, tx store.Tx) error {
					return b.st.Do(ctx, 3, func(context.Context, store.Tx) error { return nil })
				})
				if !errors.Is(err, store.ErrReadInTx) {
					t.Errorf("Do inside Do = %v, want ErrReadInTx", err)
				}
			})
			if err := b.st.Read(ctx, func(q store.Querier) error { return nil }); err != nil {
				t.Fatalf("Read outside Do = %v", err)
			}
		})
	}
}
