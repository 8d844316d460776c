package faults

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPGClusterRestart: the test's own cluster comes up, and after
// `restart -m immediate` a committed row is still there.
func TestPGClusterRestart(t *testing.T) {
	t.Parallel()
	c := startPGCluster(t)
	exec := func(sql string) int {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t AS SELECT 1 AS n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	c.RestartImmediate(t)
	if n := exec("SELECT count(*) FROM t"); n != 1 {
		t.Fatalf("after the restart the table has %d rows, want 1", n)
	}
}
