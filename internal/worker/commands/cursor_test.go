package commands_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/local"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// cursorPlaybook drains {{ schema }}.work with a cursor loop of 2 slots
// claiming up to 3 rows each time, NoETL's shape: the claim marks rows
// claimed and returns them, the tasks mark each row done. The row whose
// payload is "bad" fails its task (division by zero) and stays claimed.
// The next step reads the loop's result as NoETL's {results, stats}.
const cursorPlaybook = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: cursor, path: t/cursor}
workload: {schema: public}
workflow:
  - step: start
    loop:
      cursor:
        kind: postgres
        auth: pg
        claim: |
          WITH c AS (
            SELECT id FROM {{ schema }}.work WHERE status = 'pending'
            ORDER BY id FOR UPDATE SKIP LOCKED
            LIMIT {{ __frame_max_rows | default(1) | int }}
          )
          UPDATE {{ schema }}.work w
          SET status = 'claimed', claims = claims + 1, slot = {{ __worker_slot_id }}
          FROM c WHERE w.id = c.id
          RETURNING w.id, w.payload;
      iterator: job
      spec:
        mode: cursor
        max_in_flight: 2
        frame: {max_rows: 3, row_concurrency: 2, max_seconds: 30, max_bytes: 1048576, lease_seconds: 120, heartbeat_seconds: 30, process: row}
    tool:
      - name: check
        kind: postgres
        auth: pg
        command: "SELECT 1 / (CASE WHEN '{{ iter.job.payload }}' = 'bad' THEN 0 ELSE 1 END) AS ok"
      - name: finish
        kind: postgres
        auth: pg
        command: |
          UPDATE {{ schema }}.work SET status = 'done', runs = runs + 1, seen = '{{ job.payload }}'
          WHERE id = {{ iter.job.id }} RETURNING id
    next:
      arcs:
        - step: report
          when: "{{ event.name == 'loop.done' }}"
  - step: report
    tool:
      kind: noop
      result:
        slots: "{{ start.results | length }}"
        stats_total: "{{ start.stats.total }}"
        processed: "{{ start.results | sum(attribute='processed') }}"
        failed: "{{ start.results | sum(attribute='failed') }}"
`

const cursorRows = 20

// seedWork creates a schema of the test's own with a work table of n
// pending rows (row 7's payload is "bad") and returns the schema and a
// connection to check it.
func seedWork(t *testing.T, n int) (string, *pgx.Conn) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pgtest.URL())
	if err != nil {
		t.Fatalf("connect %s: %v", pgtest.URL(), err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "cursor_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.Exec(cctx, "DROP SCHEMA "+schema+" CASCADE")
		_ = conn.Close(cctx)
	})
	_, err = conn.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA %[1]s;
CREATE TABLE %[1]s.work (id int PRIMARY KEY, payload text NOT NULL, status text NOT NULL DEFAULT 'pending',
  claims int NOT NULL DEFAULT 0, runs int NOT NULL DEFAULT 0, slot int, seen text);
INSERT INTO %[1]s.work (id, payload) SELECT i, CASE WHEN i = 7 THEN 'bad' ELSE 'p' || i END FROM generate_series(1, %[2]d) AS i;`, schema, n))
	if err != nil {
		t.Fatal(err)
	}
	return schema, conn
}

// checkDrained asserts every row was claimed exactly once and, but the bad
// row, processed exactly once with its own payload; the bad row stays
// claimed for the user's reclaim.
func checkDrained(t *testing.T, conn *pgx.Conn, schema string, n int) {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT id, payload, status, claims, runs, coalesce(seen, '') FROM "+schema+".work ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var id, claims, runs int
		var payload, status, seen string
		if err := rows.Scan(&id, &payload, &status, &claims, &runs, &seen); err != nil {
			t.Fatal(err)
		}
		got++
		want := fmt.Sprintf("done claims=1 runs=1 seen=%s", payload)
		if payload == "bad" {
			want = "claimed claims=1 runs=0 seen="
		}
		if have := fmt.Sprintf("%s claims=%d runs=%d seen=%s", status, claims, runs, seen); have != want {
			t.Errorf("row %d: %s, want %s", id, have, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("%d rows, want %d", got, n)
	}
}

// checkCursorResult asserts the loop's result (from its loop.done event)
// and the report step's reading of it.
func checkCursorResult(t *testing.T, ex api.Execution, events []api.Event) {
	t.Helper()
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s: %s", ex.Status, ex.Error)
	}
	var slots []map[string]any
	for _, e := range events {
		if e.EventType == api.EvLoopDone && e.Step == "start" {
			if err := json.Unmarshal(e.Result, &slots); err != nil {
				t.Fatalf("loop.done result %s: %v", e.Result, err)
			}
		}
	}
	if len(slots) != 2 {
		t.Fatalf("loop result %v: want one result per drain slot (2)", slots)
	}
	processed, failed, frames := 0.0, 0.0, 0.0
	for i, s := range slots {
		if s["worker_slot_id"] != float64(i+1) {
			t.Errorf("slot %d result %v: worker_slot_id", i, s)
		}
		processed += s["processed"].(float64)
		failed += s["failed"].(float64)
		frames += s["frame_count"].(float64)
		if s["failed"].(float64) > 0 {
			errs, _ := s["errors"].([]any)
			if s["status"] != "partial" || len(errs) != 1 || !strings.Contains(fmt.Sprint(errs[0]), "division by zero") {
				t.Errorf("slot with the bad row: %v; want status partial and its error listed", s)
			}
		}
	}
	// 20 rows in claims of at most 3: at least 7 claims returned rows.
	if processed != cursorRows-1 || failed != 1 || frames < 7 {
		t.Errorf("slots processed %v, failed %v, frames %v; want %d, 1, >= 7", processed, failed, frames, cursorRows-1)
	}
	want := fmt.Sprintf(`{"failed":1,"processed":%d,"slots":2,"stats_total":2}`, cursorRows-1)
	if string(ex.Result) != want {
		t.Errorf("report result %s, want %s", ex.Result, want)
	}
}

// A cursor loop drains its work table in the distributed runtime: two
// drain slots claim three rows at a time until the table is empty, every
// row is claimed and processed exactly once, a failing row is counted and
// listed (and stays claimed), and the loop's result reads as NoETL's.
func TestCursorLoopDistributed(t *testing.T) {
	t.Parallel()
	schema, conn := seedWork(t, cursorRows)
	b := setup(t, 10*time.Second)
	if _, err := b.api.CredentialPut(t.Context(), api.Credential{Name: "pg", Kind: "postgres", Data: map[string]any{"url": pgtest.URL()}}); err != nil {
		t.Fatal(err)
	}
	ex := b.run(cursorPlaybook, map[string]any{"schema": schema})
	events, err := b.api.Events(t.Context(), ex.ExecutionID)
	if err != nil {
		t.Fatal(err)
	}
	checkCursorResult(t, ex, events)
	checkDrained(t, conn, schema, cursorRows)
	issued := 0
	for _, e := range events {
		if e.EventType == api.EvCommandIssued && e.Step == "start" {
			issued++
		}
	}
	if issued != 2 {
		t.Errorf("%d commands issued for the cursor step, want 2 (max_in_flight drain slots)", issued)
	}
}

// The same in the local runtime.
func TestCursorLoopLocal(t *testing.T) {
	t.Parallel()
	schema, conn := seedWork(t, cursorRows)
	file := filepath.Join(t.TempDir(), "cursor.yaml")
	if err := os.WriteFile(file, []byte(cursorPlaybook), 0o644); err != nil {
		t.Fatal(err)
	}
	var events []api.Event
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ex, err := local.Run(ctx, file, map[string]any{"schema": schema}, local.Options{
		Credentials: map[string]map[string]any{"pg": {"url": pgtest.URL()}},
		Progress:    func(e api.Event) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCursorResult(t, ex, events)
	checkDrained(t, conn, schema, cursorRows)
}

// runLocalCursor runs playbook in the local runtime with the pg credential
// and returns the loop's slot results and the execution.
func runLocalCursor(t *testing.T, playbook, schema string) ([]map[string]any, api.Execution) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cursor.yaml")
	if err := os.WriteFile(file, []byte(playbook), 0o644); err != nil {
		t.Fatal(err)
	}
	var slots []map[string]any
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ex, err := local.Run(ctx, file, map[string]any{"schema": schema}, local.Options{
		Credentials: map[string]map[string]any{"pg": {"url": pgtest.URL()}},
		Progress: func(e api.Event) {
			if e.EventType == api.EvLoopDone {
				_ = json.Unmarshal(e.Result, &slots)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != api.ExecCompleted {
		t.Fatalf("execution %s: %s", ex.Status, ex.Error)
	}
	return slots, ex
}

const cursorClaim = `      cursor:
        kind: postgres
        auth: pg
        claim: |
          WITH c AS (SELECT id FROM {{ schema }}.work WHERE status = 'pending' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT {{ __frame_max_rows }})
          UPDATE {{ schema }}.work w SET status = 'claimed', claims = claims + 1 FROM c WHERE w.id = c.id RETURNING w.id;
      iterator: job
`

// With process: frame the tasks run once per claim, with the claim's rows
// as iter.<iterator>.
func TestCursorLoopWholeFrames(t *testing.T) {
	t.Parallel()
	schema, conn := seedWork(t, 10)
	slots, _ := runLocalCursor(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: frames, path: t/frames}
workload: {schema: public}
workflow:
  - step: start
    loop:
`+cursorClaim+`      spec: {mode: cursor, frame: {max_rows: 4, process: frame}}
    tool:
      kind: postgres
      auth: pg
      command: "UPDATE {{ schema }}.work SET status = 'done', runs = runs + 1, seen = '{{ iter.job | length }}' WHERE id IN ({{ iter.job | map(attribute='id') | join(',') }})"
`, schema)
	if len(slots) != 1 || slots[0]["processed"] != float64(10) || slots[0]["frame_count"] != float64(3) || slots[0]["failed"] != float64(0) {
		t.Fatalf("slots %v; want one slot that processed 10 rows in 3 frames", slots)
	}
	var sizes string
	if err := conn.QueryRow(t.Context(), "SELECT string_agg(DISTINCT seen || 'x' || runs, ',' ORDER BY seen || 'x' || runs) FROM "+schema+".work WHERE status = 'done'").Scan(&sizes); err != nil {
		t.Fatal(err)
	}
	if sizes != "2x1,4x1" { // frames of 4, 4 and 2 rows, each row run once
		t.Fatalf("frame sizes and runs seen by the rows: %s, want 2x1,4x1", sizes)
	}
}

// A task list that breaks stops its slot after the frame: the frame's
// other rows still run (no claimed row is left behind), nothing more is
// claimed.
func TestCursorLoopBreakEndsTheSlot(t *testing.T) {
	t.Parallel()
	schema, conn := seedWork(t, 10)
	slots, _ := runLocalCursor(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: brk, path: t/brk}
workload: {schema: public}
workflow:
  - step: start
    loop:
`+cursorClaim+`      spec: {mode: cursor, frame: {max_rows: 2}}
    tool:
      - name: mark
        kind: postgres
        auth: pg
        command: "UPDATE {{ schema }}.work SET status = 'done', runs = runs + 1 WHERE id = {{ iter.job.id }}"
        spec:
          policy:
            rules:
              - when: "{{ iter.job.id == 5 }}"
                then: {do: break}
      - name: after
        kind: noop
`, schema)
	if len(slots) != 1 || slots[0]["processed"] != float64(6) || slots[0]["breaks"] != float64(1) || slots[0]["frame_count"] != float64(3) {
		t.Fatalf("slots %v; want one slot: 6 rows processed (the breaking frame's too), 1 break, 3 frames", slots)
	}
	var done, pending int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FILTER (WHERE status = 'done' AND runs = 1), count(*) FILTER (WHERE status = 'pending') FROM "+schema+".work").Scan(&done, &pending); err != nil {
		t.Fatal(err)
	}
	if done != 6 || pending != 4 {
		t.Fatalf("%d rows done, %d pending; want 6 and 4", done, pending)
	}
}

// A cursor step's single tool runs per row under its own policy: here a
// rule continues past the bad row's failure, so the row counts as
// processed (its result is the error envelope) and the slot is ok.
func TestCursorLoopSingleToolPolicyPerRow(t *testing.T) {
	t.Parallel()
	schema, conn := seedWork(t, 8)
	slots, _ := runLocalCursor(t, `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: single, path: t/single}
workload: {schema: public}
workflow:
  - step: start
    loop:
`+cursorClaim+`      spec: {mode: cursor, max_in_flight: 2, frame: {max_rows: 3}}
    tool:
      kind: postgres
      auth: pg
      command: "UPDATE {{ schema }}.work SET status = 'done', runs = runs + 1 WHERE id = {{ iter.job.id }} AND 1 / (CASE WHEN {{ iter.job.id }} = 7 THEN 0 ELSE 1 END) = 1"
      spec:
        policy:
          rules:
            - when: "{{ output.status == 'error' }}"
              then: {do: continue}
`, schema)
	processed, failed := 0.0, 0.0
	for _, s := range slots {
		processed += s["processed"].(float64)
		failed += s["failed"].(float64)
		if s["status"] != "ok" {
			t.Errorf("slot %v: want status ok (the policy continued past the failure)", s)
		}
	}
	if len(slots) != 2 || processed != 8 || failed != 0 {
		t.Fatalf("slots %v; want 2 slots, 8 rows processed, none failed", slots)
	}
	var done int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM "+schema+".work WHERE status = 'done' AND runs = 1").Scan(&done); err != nil {
		t.Fatal(err)
	}
	if done != 7 { // row 7's update failed; its claim stands
		t.Fatalf("%d rows done, want 7", done)
	}
}
