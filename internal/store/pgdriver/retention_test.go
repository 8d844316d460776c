package pgdriver_test

import (
	"testing"
	"time"

	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
	"github.com/millrace/millrace/internal/store/storetest"
)

func TestRetention(t *testing.T) {
	t.Parallel()
	storetest.Retention(t, func(t *testing.T) store.Driver { return pgtest.Open(t) })
}

// partitionsOf lists the event table's partitions as the catalog has them
// (pg_inherits), by name, with the number of rows each holds.
func partitionsOf(t *testing.T, d *pgdriver.Driver) map[string]int64 {
	t.Helper()
	rows, err := d.Pool().Query(t.Context(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass`)
	if err != nil {
		t.Fatalf("read pg_inherits: %v", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatalf("read pg_inherits: %v", err)
		}
		names = append(names, n)
	}
	rows.Close()
	out := map[string]int64{}
	for _, n := range names {
		var c int64
		if err := d.Pool().QueryRow(t.Context(), `SELECT count(*) FROM "`+n+`"`).Scan(&c); err != nil {
			t.Fatalf("count %s: %v", n, err)
		}
		out[n] = c
	}
	return out
}

// TestEnsurePartitionsAhead: a new install has only the default partition;
// EnsurePartitions makes today's and the next days', once, and inserts land
// in their day's partition.
func TestEnsurePartitionsAhead(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := pgtest.Open(t)
	if got := partitionsOf(t, d); len(got) != 1 || got["events_default"] != 0 {
		t.Fatalf("partitions of a new install = %v, want only an empty events_default", got)
	}
	now := time.Now().UTC()
	n, err := d.EnsurePartitions(ctx, now, 3)
	if err != nil || n != 4 {
		t.Fatalf("EnsurePartitions = %d, %v; want 4 (today and 3 days ahead)", n, err)
	}
	if n, err := d.EnsurePartitions(ctx, now, 3); err != nil || n != 0 {
		t.Fatalf("second EnsurePartitions = %d, %v; want 0", n, err)
	}
	got := partitionsOf(t, d)
	for i := range 4 {
		name := "events_p" + now.AddDate(0, 0, i).Format("20060102")
		if _, ok := got[name]; !ok {
			t.Errorf("partition %s missing from %v", name, got)
		}
	}
	err = write(ctx, d, func(tx store.Tx) error {
		return tx.EventInsert(ctx, store.Event{EventID: ids.New(1).Next(), ExecutionID: 1, EventType: "step.enter", CreatedAt: now})
	})
	if err != nil {
		t.Fatalf("insert an event: %v", err)
	}
	if got := partitionsOf(t, d); got["events_p"+now.Format("20060102")] != 1 || got["events_default"] != 0 {
		t.Fatalf("after one insert now: %v, want it in today's partition", got)
	}
	// A day the default partition already has events of is left alone:
	// creating it would fail on those rows.
	far := now.AddDate(0, 0, 10)
	err = write(ctx, d, func(tx store.Tx) error {
		return tx.EventInsert(ctx, store.Event{EventID: ids.Floor(far) + 1, ExecutionID: 1, EventType: "step.enter", CreatedAt: far})
	})
	if err != nil {
		t.Fatalf("insert an event 10 days ahead: %v", err)
	}
	if n, err := d.EnsurePartitions(ctx, far, 1); err != nil || n != 1 {
		t.Fatalf("EnsurePartitions over a day the default holds = %d, %v; want 1 (only the day after)", n, err)
	}
}

// TestMigrationKeepsEvents: events written under migration 9 (one plain
// table) are all readable after migration 10 made it partitioned; they sit
// in events_legacy, whose bound is above every one of them, and new events
// go elsewhere.
func TestMigrationKeepsEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := openUnmigrated(t, pgtest.NewSchema(t), pgdriver.Options{})
	if err := pgdriver.MigrateTo(ctx, d, 9); err != nil {
		t.Fatalf("migrate to version 9: %v", err)
	}
	const n = 500
	old := time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Microsecond)
	if _, err := d.Pool().Exec(ctx, `INSERT INTO events (event_id, execution_id, event_type, step, result, created_at)
SELECT $1::bigint + g, 7, 'step.enter', 's' || g, '{"n": 1}', $2 FROM generate_series(1, $3::int) g`, ids.Floor(old), old, n); err != nil {
		t.Fatalf("insert version-9 events: %v", err)
	}
	if err := d.Migrate(ctx); err != nil {
		t.Fatalf("Migrate 9 -> 10: %v", err)
	}
	var evs []store.Event
	err := d.Read(ctx, func(q store.Querier) error {
		var err error
		evs, err = q.EventList(ctx, 7)
		return err
	})
	if err != nil || len(evs) != n {
		t.Fatalf("EventList after the migration = %d events, %v; want %d", len(evs), err, n)
	}
	if evs[0].Step != "s1" || string(evs[0].Result) != `{"n": 1}` || !evs[0].CreatedAt.Equal(old) {
		t.Fatalf("first event after the migration = %+v, want step s1, result kept byte for byte, created %s", evs[0], old)
	}
	parts, err := d.EventPartitions(ctx)
	if err != nil {
		t.Fatalf("EventPartitions: %v", err)
	}
	if len(parts) != 2 || parts[0].Name != "events_legacy" || parts[0].From != 0 || parts[0].To <= ids.Floor(old)+n || !parts[1].Default {
		t.Fatalf("partitions after the migration = %+v, want events_legacy from MINVALUE past the last id, then the default", parts)
	}
	if got := partitionsOf(t, d); got["events_legacy"] != n {
		t.Fatalf("partition rows = %v, want the %d old events in events_legacy", got, n)
	}
	// The legacy partition goes whole once it is older than the cutoff.
	drop, err := d.RetentionDropPartitions(ctx, time.Now().Add(time.Hour))
	if err != nil || drop.Dropped != 1 || drop.Moved != 0 {
		t.Fatalf("RetentionDropPartitions past the legacy bound = %+v, %v; want it dropped, nothing moved (execution 7 has no row)", drop, err)
	}
	if got := partitionsOf(t, d); len(got) != 1 {
		t.Fatalf("partitions after the drop = %v, want only the default", got)
	}
	if n := tablesLike(t, d, "events_legacy"); n != 0 {
		t.Fatalf("%d tables named like events_legacy remain after the drop, want none", n)
	}
}

// tablesLike counts the tables in the driver's schema whose name contains
// part (a detached partition, retired_<name>, included).
func tablesLike(t *testing.T, d *pgdriver.Driver, part string) int {
	t.Helper()
	var n int
	if err := d.Pool().QueryRow(t.Context(), `SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace
AND relkind IN ('r', 'p') AND strpos(relname, $1) > 0`, part).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRetiredLeftoverIsDropped: a partition detached by a run that died
// before dropping it (retired_<name>) is dropped by the next run.
func TestRetiredLeftoverIsDropped(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	d := pgtest.Open(t)
	if _, err := d.Pool().Exec(ctx, "CREATE TABLE retired_events_p20250102 (LIKE events)"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RetentionDropPartitions(ctx, time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatalf("RetentionDropPartitions: %v", err)
	}
	if n := tablesLike(t, d, "retired_"); n != 0 {
		t.Fatalf("%d retired tables left, want none", n)
	}
}

// TestRetentionLockIsExclusive: two processes on one schema never run
// retention at once.
func TestRetentionLockIsExclusive(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := pgtest.Open(t)
	url := pgtest.WithSearchPath(pgtest.URL(), a.Schema())
	b := openUnmigrated(t, url, pgdriver.Options{})
	release, ok, err := a.RetentionLock(ctx)
	if err != nil || !ok {
		t.Fatalf("first RetentionLock = %v, %v; want it", ok, err)
	}
	if _, ok, err := b.RetentionLock(ctx); err != nil || ok {
		t.Fatalf("second RetentionLock while held = %v, %v; want false", ok, err)
	}
	release()
	release2, ok, err := b.RetentionLock(ctx)
	if err != nil || !ok {
		t.Fatalf("RetentionLock after release = %v, %v; want it", ok, err)
	}
	release2()
}
