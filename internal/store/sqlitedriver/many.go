package sqlitedriver

import (
	"context"
	"errors"

	"github.com/millrace/millrace/internal/store"
)

// CommandClaimMany implements store.ManyTx.
func (t *tx) CommandClaimMany(ctx context.Context, ps []store.ClaimParams) ([]store.ClaimOutcome, error) {
	return nil, errors.ErrUnsupported // skeleton
}

// CommandFinishMany implements store.ManyTx.
func (t *tx) CommandFinishMany(ctx context.Context, ps []store.FinishParams) ([]store.FinishOutcome, error) {
	return nil, errors.ErrUnsupported // skeleton
}

// LockExecutions implements store.ManyTx.
func (t *tx) LockExecutions(ctx context.Context, ids []int64) (map[int64]store.Execution, error) {
	return nil, errors.ErrUnsupported // skeleton
}
