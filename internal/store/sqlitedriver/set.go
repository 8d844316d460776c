package sqlitedriver

import (
	"context"
	"errors"

	"github.com/millrace/millrace/internal/store"
)

// WriteSet implements store.SetTx.
func (t *tx) WriteSet(ctx context.Context, w *store.Writes) error {
	return errors.ErrUnsupported // skeleton: filled by the set-based batch slice
}
