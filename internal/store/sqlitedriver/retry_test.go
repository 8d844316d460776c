package sqlitedriver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/millrace/millrace/internal/store"
)

// rawDB opens the bundle's file outside the driver, as another process
// would, with no busy timeout so lock conflicts fail at once.
func (b *bundle) rawDB(params ...string) *sql.DB {
	b.t.Helper()
	db, err := sql.Open(sqlDriverName, dsn(b.path, append([]string{"_pragma=busy_timeout(0)"}, params...)...))
	if err != nil {
		b.t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	b.t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestRetryableBusy: a second writer finds the write lock taken.
func TestRetryableBusy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tx, err := b.drv.Begin(b.ctx) // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(b.ctx) }()
	other := b.rawDB("_txlock=immediate")
	otherTx, err := other.BeginTx(b.ctx, nil)
	if err == nil {
		_ = otherTx.Rollback()
		t.Fatal("BEGIN IMMEDIATE while the driver holds the write lock succeeded, want SQLITE_BUSY")
	}
	t.Logf("BEGIN IMMEDIATE while locked: %v", err)
	if !b.drv.Retryable(err) {
		t.Fatalf("Retryable(%v) = false, want true for SQLITE_BUSY", err)
	}
	if !b.drv.Retryable(fmt.Errorf("caller context: %w", err)) {
		t.Fatalf("Retryable of a wrapped SQLITE_BUSY = false, want true")
	}
}

// TestRetryableLocked: dropping a table while a statement still reads it
// on the same connection fails with SQLITE_LOCKED.
func TestRetryableLocked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db := b.rawDB()
	conn, err := db.Conn(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, stmt := range []string{"CREATE TABLE scratch (x)", "INSERT INTO scratch VALUES (1), (2)"} {
		if _, err := conn.ExecContext(b.ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.QueryContext(b.ctx, "SELECT x FROM scratch")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() { // the statement is now mid-scan
		t.Fatalf("no row: %v", rows.Err())
	}
	_, err = conn.ExecContext(b.ctx, "DROP TABLE scratch")
	if err == nil {
		t.Fatal("DROP TABLE under an active statement succeeded, want SQLITE_LOCKED")
	}
	t.Logf("DROP TABLE under an active statement: %v", err)
	if !b.drv.Retryable(err) {
		t.Fatalf("Retryable(%v) = false, want true for SQLITE_LOCKED", err)
	}
}

func TestRetryableRejectsOtherErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := store.OutboxMsg{ID: 1, EventID: 1, Subject: "s", MsgID: "m", Payload: []byte("p")}
	insert := func() error {
		return write(b.ctx, b.drv, func(tx store.Tx) error { return tx.OutboxInsert(b.ctx, m) })
	}
	if err := insert(); err != nil {
		t.Fatal(err)
	}
	dup := insert()
	_, syntax := b.drv.writer.ExecContext(b.ctx, "SELEC 1")
	missing := write(b.ctx, b.drv, func(tx store.Tx) error {
		_, err := tx.LockExecution(b.ctx, 99)
		return err
	})
	for name, err := range map[string]error{
		"nil": nil, "duplicate key": dup, "syntax error": syntax, "not found": missing,
		"plain": errors.New("boom"), "cancelled": context.Canceled,
	} {
		if name != "nil" && err == nil {
			t.Fatalf("%s: provoking the error failed", name)
		}
		if b.drv.Retryable(err) {
			t.Errorf("Retryable(%s: %v) = true, want false", name, err)
		}
	}
}
