package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/wait"
)

// cursorKillPlaybook drains work with 2 slots, 2 rows per claim, each row
// taking 0.3 s. Its claim first hands rows claimed over a second ago back
// (NoETL's reclaim_stale CTE): that is how the rows a dead worker held get
// processed, as in NoETL, where the claim owns the rows' leases.
const cursorKillPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: cursor_kill, path: e2e/cursor_kill}
workflow:
  - step: start
    loop:
      cursor:
        kind: postgres
        auth: pg
        claim: |
          WITH reclaim_stale AS (
            UPDATE work SET status = 'pending', claimed_at = NULL
            WHERE status = 'claimed' AND claimed_at < clock_timestamp() - INTERVAL '1 second'
          ),
          c AS (
            SELECT id FROM work WHERE status = 'pending'
            ORDER BY id FOR UPDATE SKIP LOCKED LIMIT {{ __frame_max_rows }}
          )
          UPDATE work w SET status = 'claimed', claimed_at = clock_timestamp(), claims = claims + 1
          FROM c WHERE w.id = c.id RETURNING w.id;
      iterator: job
      spec:
        mode: cursor
        max_in_flight: 2
        frame: {max_rows: 2}
    tool:
      kind: postgres
      auth: pg
      command: "SELECT pg_sleep(0.3); UPDATE work SET status = 'done', runs = runs + 1 WHERE id = {{ iter.job.id }}"
`

// A worker is SIGKILLed while its drain slots process rows: the slots'
// leases expire, the other worker runs them again (attempt 2), they claim
// afresh, the rows the dead worker held come back through the claim's own
// reclaim, and every row ends processed exactly once.
func TestCursorSurvivesWorkerKill(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{lease: "2"})
	c.env = append(c.env, "MILLRACE_SECRET_KEY="+testSecretKey)
	c.startServer()
	victim := c.startWorker(10)
	db := newDatabase(t)
	c.putCredential("pg", "postgres", map[string]any{"url": db})
	query(t, db, `CREATE TABLE work (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending', claimed_at timestamptz,
		claims int NOT NULL DEFAULT 0, runs int NOT NULL DEFAULT 0)`)
	const rows = 24
	query(t, db, fmt.Sprintf("INSERT INTO work (id) SELECT generate_series(1, %d)", rows))
	reg := c.register(cursorKillPlaybook)
	ids := c.executeMany(reg.Path, 1, nil)
	wait.For(t, 30*time.Second, func() error {
		if n := query(t, db, "SELECT count(*) AS n FROM work WHERE status = 'done'")[0]["n"].(int64); n < 4 {
			return fmt.Errorf("%d rows done", n)
		}
		return nil
	})
	victim.Signal(syscall.SIGKILL)
	_ = victim.Wait(t, 10*time.Second)
	if n := query(t, db, "SELECT count(*) AS n FROM work WHERE status = 'done'")[0]["n"].(int64); n == rows {
		t.Fatalf("every row was done before the kill: it did not land mid-drain")
	}
	c.startWorker(10)
	c.waitAll(ids, 90*time.Second)
	if maxAttempt := c.checkExactlyOnce(ids, map[string]bool{"start": true}); maxAttempt < 2 {
		t.Fatalf("no drain slot was re-run after the kill (max attempt %d)", maxAttempt)
	}
	t.Logf("rows claimed again after the kill: %v", query(t, db, "SELECT count(*) AS n FROM work WHERE claims > 1")[0]["n"])
	for _, r := range query(t, db, "SELECT id, status, runs FROM work ORDER BY id") {
		if r["status"] != "done" || r["runs"].(int32) != 1 {
			t.Errorf("row %v: %s after %d runs, want done after exactly 1", r["id"], r["status"], r["runs"])
		}
	}
}
