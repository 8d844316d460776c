package pgdriver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// addExecutions inserts running executions with the given ids.
func (b *testBundle) addExecutions(ids ...int64) {
	b.t.Helper()
	if err := write(b.ctx, b.drv, func(tx store.Tx) error {
		for _, id := range ids {
			if err := tx.ExecutionInsert(b.ctx, store.Execution{ExecutionID: id, CatalogID: 1, Path: "p", Version: 1, StartedAt: b.now}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.t.Fatalf("ExecutionInsert: %v", err)
	}
}

// TestRetryableDeadlock locks two rows in opposite order from two
// transactions; PostgreSQL aborts one of them with deadlock_detected, which
// the driver must call retryable, as wrapped by its own methods.
func TestRetryableDeadlock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.addExecutions(1, 2)
	txs := make([]store.Tx, 2)
	for i := range txs {
		tx, err := b.drv.Begin(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(b.ctx)
		// Each takes its first row: tx 0 row 1, tx 1 row 2.
		if _, err := tx.LockExecution(b.ctx, int64(i+1)); err != nil {
			t.Fatalf("tx %d: first LockExecution: %v", i, err)
		}
		txs[i] = tx
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, tx := range txs {
		wg.Go(func() {
			// Now each wants the other's row. The victim rolls back at
			// once so the survivor's lock is granted.
			if _, errs[i] = tx.LockExecution(b.ctx, int64(2-i)); errs[i] != nil {
				_ = tx.Rollback(b.ctx)
			}
		})
	}
	wg.Wait()
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 {
		t.Fatalf("crossed LockExecution errors = %v, want exactly one deadlock victim", errs)
	}
	if !b.drv.Retryable(failed[0]) {
		t.Fatalf("Retryable(%v) = false, want true for a deadlock", failed[0])
	}
	if !b.drv.Retryable(fmt.Errorf("caller context: %w", failed[0])) {
		t.Fatalf("Retryable of a wrapped deadlock = false, want true")
	}
}

// TestRetryableSerializationFailure updates a row under REPEATABLE READ
// after another transaction changed it: serialization_failure.
func TestRetryableSerializationFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.addExecutions(1)
	pool := b.drv.Pool()
	first, err := pool.BeginTx(b.ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(context.WithoutCancel(b.ctx))
	// The first statement fixes the snapshot.
	if _, err := first.Exec(b.ctx, "SELECT 1 FROM executions WHERE execution_id = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(b.ctx, "UPDATE executions SET error = 'changed' WHERE execution_id = 1"); err != nil {
		t.Fatal(err)
	}
	_, err = first.Exec(b.ctx, "UPDATE executions SET error = 'mine' WHERE execution_id = 1")
	if err == nil {
		t.Fatal("REPEATABLE READ update of a concurrently changed row succeeded, want serialization_failure")
	}
	if !b.drv.Retryable(err) {
		t.Fatalf("Retryable(%v) = false, want true for a serialization failure", err)
	}
}

func TestRetryableRejectsOtherErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.addExecutions(1)
	dup := write(b.ctx, b.drv, func(tx store.Tx) error {
		return tx.ExecutionInsert(b.ctx, store.Execution{ExecutionID: 1, CatalogID: 1, Path: "p", Version: 1, StartedAt: b.now})
	})
	_, syntax := b.drv.Pool().Exec(b.ctx, "SELEC 1")
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

// TestAllocateNodeDistinct stands in for server processes starting at once.
func TestAllocateNodeDistinct(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const callers = 50
	nodes := make([]int, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { nodes[i], errs[i] = b.drv.AllocateNode(b.ctx) })
	}
	wg.Wait()
	seen := map[int]bool{}
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("AllocateNode %d: %v", i, errs[i])
		}
		if n := nodes[i]; n < 0 || n > ids.MaxNode || seen[n] {
			t.Fatalf("AllocateNode results %v: want %d distinct values in [0, %d]", nodes, callers, ids.MaxNode)
		}
		seen[nodes[i]] = true
	}
}

func TestAllocateNodeWraps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Pretend 2047 nodes were handed out: the next one wraps to 0.
	if _, err := b.drv.Pool().Exec(b.ctx, "SELECT setval('millrace_node_seq', $1)", 2*(ids.MaxNode+1)-1); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{0, 1} {
		if n, err := b.drv.AllocateNode(b.ctx); err != nil || n != want {
			t.Fatalf("AllocateNode after wrap = %d, %v; want %d", n, err, want)
		}
	}
}

func TestAllocateNodeNeedsMigrate(t *testing.T) {
	t.Parallel()
	d := openUnmigrated(t, pgtest.NewSchema(t), pgdriver.Options{})
	_, err := d.AllocateNode(t.Context())
	if err == nil || !strings.Contains(err.Error(), "Migrate") {
		t.Fatalf("AllocateNode on an unmigrated database = %v, want an error that says to migrate", err)
	}
}
