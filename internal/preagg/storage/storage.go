// Package storage keeps pre-aggregate materializations (Parquet files)
// behind one interface: a NATS JetStream Object Store bucket, which every
// deployment already has, or a directory (dev mode, one machine). Objects
// are immutable: a key is written once and never changed, so a worker's
// local cache of them never goes stale.
package storage

import (
	"context"
	"errors"
	"io"
)

// ErrNotFound: the object does not exist (never written, or lost). To a
// caller serving a query this is a miss, never an error.
var ErrNotFound = errors.New("materialization object not found")

// Store holds materialization objects by key ("project/model/preagg/build/part.parquet").
type Store interface {
	// Put writes the object; it is visible to Get only once complete.
	Put(ctx context.Context, key string, r io.Reader) (size int64, err error)
	// Get copies the object into w; ErrNotFound if absent.
	Get(ctx context.Context, key string, w io.Writer) error
	// Delete removes the object; absent is not an error.
	Delete(ctx context.Context, key string) error
	// String names the store for logs and `preagg status` ("dir:/path",
	// "nats:bucket").
	String() string
}
