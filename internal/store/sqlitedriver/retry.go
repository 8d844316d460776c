package sqlitedriver

import (
	"errors"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/millrace/millrace/internal/store"
)

var _ store.Retryer = (*Driver)(nil)

// Retryable implements store.Retryer: the database was locked by another
// connection (typically another process, after busy_timeout ran out), so
// running the transaction again can succeed. Extended codes such as
// SQLITE_BUSY_SNAPSHOT count too.
func (d *Driver) Retryable(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary result code
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}
