package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/flow"
	"github.com/millrace/millrace/internal/store"
)

// Every way a store outage reaches a handler is 503 unavailable; a bug
// stays 500 and a domain error keeps its code.
func TestStoreOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	down := []error{
		store.ErrClosed,
		context.DeadlineExceeded,
		&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"},
		&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"},
		&pgconn.PgError{Code: "08006"},
		&pgconn.PgError{Code: "53300"},
		fmt.Errorf("pgdriver: append: %w", io.ErrUnexpectedEOF),
		fmt.Errorf("flush: %w", io.EOF),
		fmt.Errorf("x: %w", pgconn.ErrConnClosed),
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
		fmt.Errorf("read: %w", syscall.ECONNRESET),
		errors.New("pgdriver: execute: closed pool"), // flattened with %v
		errors.New("FATAL: the database system is shutting down (SQLSTATE 57P03)"),
	}
	for _, err := range down {
		if e, caused := apiError(err); e.Code != apierr.Unavailable || caused {
			t.Errorf("apiError(%v) = %s (caused %v); want unavailable", err, e.Code, caused)
		}
	}
	up := map[error]apierr.Code{
		errors.New("nil map"):                      apierr.Internal,
		&pgconn.PgError{Code: "23505"}:             apierr.Internal, // a unique violation is a bug here, not an outage
		fmt.Errorf("x: %w", flow.ErrNotHolder):     apierr.ClaimConflict,
		apierr.New(apierr.BadRequest, "bad field"): apierr.BadRequest,
	}
	for err, want := range up {
		if e, _ := apiError(err); e.Code != want {
			t.Errorf("apiError(%v) = %s; want %s", err, e.Code, want)
		}
	}
}

// A 503 and a 429 carry Retry-After; other errors do not.
func TestRetryAfterOnRetryableErrors(t *testing.T) {
	t.Parallel()
	for code, want := range map[apierr.Code]string{apierr.Unavailable: retryAfterSeconds, apierr.Overloaded: "1", apierr.BadRequest: ""} {
		rec := httptest.NewRecorder()
		writeErr(rec, apierr.New(code, "x"))
		if got := rec.Header().Get("Retry-After"); got != want {
			t.Errorf("%s: Retry-After %q, want %q", code, got, want)
		}
		if rec.Code != code.Status() {
			t.Errorf("%s: status %d", code, rec.Code)
		}
	}
}
