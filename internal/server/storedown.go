package server

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/millrace/millrace/internal/store"
)

// retryAfterSeconds is the Retry-After of a 503 unavailable: a PostgreSQL
// restart or failover takes seconds, and clients add jitter on top.
const retryAfterSeconds = "2"

// storeDown reports whether err means the event store could not be
// reached or dropped the connection, not that the request or the server
// is wrong: the client gets 503 unavailable with Retry-After and may try
// again, never 500 (issue 15: a PostgreSQL restart answered 5% of submits
// with 500).
func storeDown(err error) bool {
	if errors.Is(err, store.ErrClosed) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) { // the server is stopping, or the caller left
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgUnavailable(pe.Code)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // busy beyond busy_timeout and the store's own retries
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// A driver or a domain package that flattened the cause with %v
	// leaves only its text.
	msg := err.Error()
	for _, s := range downTexts {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// pgUnavailable: SQLSTATE class 08 (connection exception), 57P01-57P03
// (admin or crash shutdown, cannot connect now: a restart or recovery),
// 53300 (too many connections) and 40001/40P01 that outlived the store's
// retries.
func pgUnavailable(code string) bool {
	if strings.HasPrefix(code, "08") {
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "53300", "40001", "40P01":
		return true
	}
	return false
}

var downTexts = []string{
	"conn closed", "closed pool", "connection refused", "connection reset",
	"broken pipe", "unexpected EOF", "SQLSTATE 08", "SQLSTATE 57P0",
	"the database system is", "database is locked",
}
