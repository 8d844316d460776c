package pgdriver

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// SQLSTATEs of transient failures: re-running the transaction may succeed.
const (
	sqlstateSerializationFailure = "40001"
	sqlstateDeadlockDetected     = "40P01"
	// sqlstateUndefinedTable is also what a missing sequence reports.
	sqlstateUndefinedTable = "42P01"
)

// nodeCount is how many distinct id-generator nodes exist.
const nodeCount = ids.MaxNode + 1

var (
	_ store.Retryer       = (*Driver)(nil)
	_ store.NodeAllocator = (*Driver)(nil)
)

// Retryable implements store.Retryer: PostgreSQL aborted the transaction
// because of a deadlock or a serialisation conflict with another one, so
// running it again can succeed.
func (d *Driver) Retryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == sqlstateDeadlockDetected || pgErr.Code == sqlstateSerializationFailure
}

// AllocateNode implements store.NodeAllocator. Every call takes the next
// value of a sequence, so server processes sharing the database get
// distinct nodes until nodeCount allocations wrap around.
func (d *Driver) AllocateNode(ctx context.Context) (int, error) {
	var n int64
	err := d.pool.QueryRow(ctx, "SELECT nextval('millrace_node_seq') % $1", nodeCount).Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlstateUndefinedTable {
		return 0, fmt.Errorf("pgdriver: allocate id-generator node: %w; the database is not migrated, run Migrate first", err)
	}
	if err != nil {
		return 0, fmt.Errorf("pgdriver: allocate id-generator node: %w", err)
	}
	return int(n), nil
}
