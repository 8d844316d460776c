package pgdriver

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

var (
	_ store.Retention   = (*Driver)(nil)
	_ store.Partitioner = (*Driver)(nil)
)

// lockClassRetention keys the advisory lock that lets one server at a time
// run retention on a schema.
const lockClassRetention int32 = 0x72657465 // "rete"

// dropLockTimeout bounds the wait for the event table's ACCESS EXCLUSIVE
// lock when a partition is detached: a queued ACCESS EXCLUSIVE request
// blocks every insert behind it, so rather than wait out a long reader the
// drop gives up and the next run tries again.
const dropLockTimeout = "2s"

// clockSlack widens "an execution's events have ids at or after its own
// id" for servers whose clocks disagree: the id of an event another server
// wrote can be a little lower than the execution's.
var clockSlack = ids.Span(time.Hour)

// RetentionLock implements store.Retention with a session advisory lock
// held on a connection of its own until release.
func (d *Driver) RetentionLock(ctx context.Context) (func(), bool, error) {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("pgdriver: retention lock: acquire connection: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, hashtext(COALESCE(current_schema(), '')))", lockClassRetention).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("pgdriver: retention lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	release := func() {
		uctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1, hashtext(COALESCE(current_schema(), '')))", lockClassRetention); err != nil {
			_ = conn.Conn().Close(uctx) // the lock dies with the session
		}
		conn.Release()
	}
	return release, true, nil
}

// sqlRetentionDoomed picks the executions a batch deletes, oldest ended
// first, and locks them so a concurrent writer of one (a late report)
// waits or is skipped over rather than racing the delete. A child waits
// until its parent's row is gone, so a tree goes from the top down and a
// parent never loses a child it can still show.
const sqlRetentionDoomed = `SELECT e.execution_id FROM executions e
WHERE e.ended_at IS NOT NULL AND e.ended_at < $1 AND e.status <> 'running'
  AND (e.parent_execution_id = 0
       OR NOT EXISTS (SELECT 1 FROM executions p WHERE p.execution_id = e.parent_execution_id))
ORDER BY e.ended_at
LIMIT $2
FOR UPDATE OF e SKIP LOCKED`

// RetentionDelete implements store.Retention.
func (d *Driver) RetentionDelete(ctx context.Context, cutoff time.Time, limit int) (store.RetentionBatch, error) {
	var b store.RetentionBatch
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		b = store.RetentionBatch{}
		rows, err := tx.Query(ctx, sqlRetentionDoomed, cutoff, limit)
		if err != nil {
			return err
		}
		doomed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(doomed) == 0 {
			return nil
		}
		// Blob references sit in result columns; every blob is referenced
		// by the execution that stored it, so they go with it.
		rows, err = tx.Query(ctx, `SELECT result::text FROM executions WHERE execution_id = ANY($1) AND result::text LIKE $2
UNION ALL SELECT result::text FROM commands WHERE execution_id = ANY($1) AND result::text LIKE $2
UNION ALL SELECT result::text FROM loops WHERE execution_id = ANY($1) AND result::text LIKE $2
UNION ALL SELECT result::text FROM events WHERE execution_id = ANY($1) AND result::text LIKE $2`, doomed, store.BlobRefPattern)
		if err != nil {
			return err
		}
		refs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		blobs := blobIDs(refs)
		var hasOutbox bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass('outbox') IS NOT NULL").Scan(&hasOutbox); err != nil {
			return err
		}
		del := func(n *int64, sql string, arg any) error {
			tag, err := tx.Exec(ctx, sql, arg)
			if err == nil && n != nil {
				*n += tag.RowsAffected()
			}
			return err
		}
		if len(blobs) > 0 {
			if err := del(&b.Blobs, "DELETE FROM blobs WHERE id = ANY($1)", blobs); err != nil {
				return err
			}
		}
		if hasOutbox {
			if err := del(nil, "DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM commands WHERE execution_id = ANY($1))", doomed); err != nil {
				return err
			}
		}
		if err := del(&b.Commands, "DELETE FROM commands WHERE execution_id = ANY($1)", doomed); err != nil {
			return err
		}
		if err := del(&b.Loops, "DELETE FROM loops WHERE execution_id = ANY($1)", doomed); err != nil {
			return err
		}
		// Events go row by row only from the default and legacy
		// partitions: a day partition goes whole (RetentionDropPartitions).
		parts, err := eventPartitions(ctx, tx)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if !p.Default && isDay(p.Name) {
				continue
			}
			if err := del(&b.Events, "DELETE FROM "+pgx.Identifier{p.Name}.Sanitize()+" WHERE execution_id = ANY($1)", doomed); err != nil {
				return err
			}
		}
		return del(&b.Executions, "DELETE FROM executions WHERE execution_id = ANY($1)", doomed)
	})
	if err != nil {
		return store.RetentionBatch{}, fmt.Errorf("pgdriver: retention: delete executions ended before %s: %w", cutoff.Format(time.RFC3339), err)
	}
	return b, nil
}

func blobIDs(refs []string) []int64 {
	var out []int64
	for _, r := range refs {
		if id, ok := store.BlobRef([]byte(r)); ok {
			out = append(out, id)
		}
	}
	return out
}

// partitionName is the name of the partition of day (UTC midnight).
func partitionName(day time.Time) string { return "events_p" + day.Format("20060102") }

// EnsurePartitions implements store.Partitioner. A day is created only
// when no partition covers it yet and the default partition holds no event
// at or above its start: creating a range the default partition already
// has rows of would fail, and scanning it for them would hold the table.
func (d *Driver) EnsurePartitions(ctx context.Context, now time.Time, days int) (int, error) {
	parts, err := d.EventPartitions(ctx)
	if err != nil {
		return 0, err
	}
	var defaultMax int64 = -1
	if err := d.pool.QueryRow(ctx, "SELECT COALESCE(MAX(event_id), -1) FROM events_default").Scan(&defaultMax); err != nil {
		return 0, fmt.Errorf("pgdriver: read the default event partition's last id: %w", err)
	}
	day := now.UTC().Truncate(24 * time.Hour)
	created := 0
	for i := 0; i <= days; i++ {
		start := day.AddDate(0, 0, i)
		from, to := ids.Floor(start), ids.Floor(start.AddDate(0, 0, 1))
		if from <= defaultMax || overlaps(parts, from, to) {
			continue
		}
		sql := fmt.Sprintf("CREATE TABLE %s PARTITION OF events FOR VALUES FROM (%d) TO (%d)",
			pgx.Identifier{partitionName(start)}.Sanitize(), from, to)
		if _, err := d.pool.Exec(ctx, sql); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "42P07" || pgErr.Code == "42P17" || pgErr.Code == "23514") {
				continue // another process made it, or rows arrived meanwhile: the next run looks again
			}
			return created, fmt.Errorf("pgdriver: create event partition for %s: %w", start.Format(time.DateOnly), err)
		}
		created++
	}
	return created, nil
}

func overlaps(parts []store.EventPartition, from, to int64) bool {
	for _, p := range parts {
		if !p.Default && p.From < to && from < p.To {
			return true
		}
	}
	return false
}

// boundRE reads a range partition's bounds from pg_get_expr.
var boundRE = regexp.MustCompile(`FROM \((MINVALUE|'?-?\d+'?)\) TO \((MAXVALUE|'?-?\d+'?)\)`)

// EventPartitions implements store.Partitioner.
func (d *Driver) EventPartitions(ctx context.Context) ([]store.EventPartition, error) {
	return eventPartitions(ctx, d.pool)
}

// isDay reports whether name is a day partition's (partitionName).
func isDay(name string) bool { return dayRE.MatchString(name) }

var dayRE = regexp.MustCompile(`^events_p\d{8}$`)

func eventPartitions(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) ([]store.EventPartition, error) {
	rows, err := db.Query(ctx, `SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list event partitions: %w", err)
	}
	type row struct{ name, bound string }
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.name, &x.bound)
	})
	if err != nil {
		return nil, fmt.Errorf("pgdriver: list event partitions: %w", err)
	}
	out := make([]store.EventPartition, 0, len(got))
	for _, g := range got {
		if g.bound == "DEFAULT" {
			out = append(out, store.EventPartition{Name: g.name, Default: true})
			continue
		}
		m := boundRE.FindStringSubmatch(g.bound)
		if m == nil {
			return nil, fmt.Errorf("pgdriver: event partition %s has bounds %q, not a range of event ids; was it attached by hand?", g.name, g.bound)
		}
		p := store.EventPartition{Name: g.name, From: 0, To: 1<<63 - 1}
		if m[1] != "MINVALUE" {
			p.From, _ = strconv.ParseInt(trimQuotes(m[1]), 10, 64)
		}
		if m[2] != "MAXVALUE" {
			p.To, _ = strconv.ParseInt(trimQuotes(m[2]), 10, 64)
		}
		out = append(out, p)
	}
	sortPartitions(out)
	return out, nil
}

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return s[1 : len(s)-1]
	}
	return s
}

func sortPartitions(ps []store.EventPartition) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && less(ps[j], ps[j-1]); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// less orders range partitions by lower bound, the default one last.
func less(a, b store.EventPartition) bool {
	if a.Default != b.Default {
		return b.Default
	}
	return a.From < b.From
}

// RetentionDropPartitions implements store.Partitioner. Each partition is
// one transaction: detach it (the default partition now covers its range),
// copy the events of executions still kept back into the table, which
// routes them to the default partition, and rename it retired_<name>; the
// retired table is dropped after that commit, outside the event table's
// lock. Run it after
// RetentionDelete has found nothing more to delete: every execution row
// still there is then one retention keeps (running, ended at or after
// cutoff, or a child whose parent is kept), so "its row exists" is the
// rule, and an interrupted delete only means more rows are moved (then
// deleted from the default partition later), never fewer kept. Only
// executions that can have events in the partition are looked at: ids are
// time-ordered, so those whose id is below the partition's end (plus
// clock slack).
func (d *Driver) RetentionDropPartitions(ctx context.Context, cutoff time.Time) (store.PartitionDrop, error) {
	var res store.PartitionDrop
	parts, err := d.EventPartitions(ctx)
	if err != nil {
		return res, err
	}
	limit := ids.Floor(cutoff)
	for _, p := range parts {
		if p.Default || p.To > limit {
			continue
		}
		// The kept executions are read before the lock is taken: none can
		// appear meanwhile (new ones get new ids) and only retention, which
		// holds its own lock, deletes them. As an array they make the copy
		// an index lookup per execution rather than a scan of the partition.
		rows, err := d.pool.Query(ctx, "SELECT execution_id FROM executions WHERE execution_id < $1", saturatingAdd(p.To, clockSlack))
		if err != nil {
			return res, fmt.Errorf("pgdriver: retention: read kept executions: %w", err)
		}
		kept, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return res, fmt.Errorf("pgdriver: retention: read kept executions: %w", err)
		}
		var moved int64
		err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+dropLockTimeout+"'"); err != nil {
				return err
			}
			name := pgx.Identifier{p.Name}.Sanitize()
			if _, err := tx.Exec(ctx, "ALTER TABLE events DETACH PARTITION "+name); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, "INSERT INTO events SELECT * FROM "+name+" WHERE execution_id = ANY($1)", kept)
			if err != nil {
				return err
			}
			moved = tag.RowsAffected()
			// Dropped after commit: DROP's unlink of the files is most of
			// its time, and the event table's lock should not wait for it.
			_, err = tx.Exec(ctx, "ALTER TABLE "+name+" RENAME TO "+pgx.Identifier{retiredPrefix + p.Name}.Sanitize())
			return err
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
			res.Skipped++
			continue
		}
		if err != nil {
			return res, fmt.Errorf("pgdriver: retention: drop event partition %s: %w", p.Name, err)
		}
		res.Dropped++
		res.Moved += moved
	}
	return res, d.dropRetired(ctx)
}

// retiredPrefix names a partition that was detached and emptied of kept
// events but not dropped yet.
const retiredPrefix = "retired_"

// dropRetired drops the detached partitions, including any a crash left
// between the detach's commit and the drop. They belong to no table any
// more, so dropping them locks nothing anyone else uses.
func (d *Driver) dropRetired(ctx context.Context) error {
	rows, err := d.pool.Query(ctx, `SELECT relname FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' AND NOT relispartition
  AND starts_with(relname, $1)`, retiredPrefix+"events_")
	if err != nil {
		return fmt.Errorf("pgdriver: retention: list detached event partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgdriver: retention: list detached event partitions: %w", err)
	}
	for _, n := range names {
		if _, err := d.pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{n}.Sanitize()); err != nil {
			return fmt.Errorf("pgdriver: retention: drop detached event partition %s: %w", n, err)
		}
	}
	return nil
}

func saturatingAdd(a, b int64) int64 {
	if a > 1<<63-1-b {
		return 1<<63 - 1
	}
	return a + b
}
