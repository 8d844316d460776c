// Package storage keeps pre-aggregate materializations (Parquet files)
// behind one interface: a NATS JetStream Object Store bucket, which every
// deployment already has, or a directory (dev mode, one machine). Objects
// are immutable: a key is written once and never changed, so a worker's
// local cache of them never goes stale.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
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

// Local is a Store whose objects are files on this machine (Dir): the
// engine reads them in place instead of copying them into its cache.
type Local interface {
	Store
	// Path is the file holding key; ErrNotFound if absent.
	Path(key string) (string, error)
}

// CheckKey refuses a key that could name something outside the store: it
// must be a relative, clean, slash-separated path of non-empty segments.
func CheckKey(key string) error {
	switch {
	case key == "":
		return errors.New("storage: empty object key")
	case len(key) > 1024:
		return fmt.Errorf("storage: object key of %d bytes (the most is 1024) starting %.40q", len(key), key)
	case strings.ContainsAny(key, "\\\x00"):
		return fmt.Errorf("storage: object key %q contains a backslash or NUL", key)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("storage: object key %q is absolute", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("storage: object key %q has an empty, . or .. segment", key)
		}
	}
	return nil
}
