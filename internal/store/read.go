package store

import "context"

// Reader runs read-only work: both Store and Driver are one.
type Reader interface {
	Read(ctx context.Context, fn func(q Querier) error) error
}

// ReadValue runs one read through r and returns what fn returns, so a
// caller that wants a single value needs no captured variable:
//
//	e, err := store.ReadValue(ctx, st, func(q store.Querier) (store.Execution, error) {
//		return q.ExecutionGet(ctx, id)
//	})
//
// On error it returns fn's value as fn left it (usually the zero value).
func ReadValue[T any](ctx context.Context, r Reader, fn func(q Querier) (T, error)) (T, error) {
	var v T
	err := r.Read(ctx, func(q Querier) error {
		var err error
		v, err = fn(q)
		return err
	})
	return v, err
}
