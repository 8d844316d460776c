package store

import (
	"bytes"
	"context"
	"strconv"
	"time"
)

// RetentionTx stays empty on purpose: retention does not run inside the
// group commit. Dropping a PostgreSQL partition takes an ACCESS EXCLUSIVE
// lock on the event table, and a batch of deletes is a transaction of its
// own so it never widens a batch of callers; both go through Retention,
// which the drivers implement. Kept as the seam the skeleton embedded in Tx.
type RetentionTx interface{}

// Retention removes finished executions older than the retention period
// (MILLRACE_RETENTION). Both drivers implement it; package retention runs
// it. Every method is one or a few short transactions of its own.
type Retention interface {
	// RetentionLock takes the database-wide retention lock if it is free:
	// ok false means another process runs retention now (PostgreSQL's
	// advisory lock; SQLite has one process per file and always grants it).
	// Call release when done, with a live context.
	RetentionLock(ctx context.Context) (release func(), ok bool, err error)
	// RetentionDelete deletes, in one transaction, up to limit executions
	// that ended before cutoff with every row they own: commands, loops,
	// outbox rows, the blobs their results reference and their events (on
	// PostgreSQL only those in the default partition: the others go with
	// their day's partition, see RetentionDropPartitions). An execution
	// whose parent is still kept waits for its parent. It returns how many
	// executions it deleted; 0 means none is left (a child becomes deletable once its parent has gone, so a run goes on until a batch deletes nothing).
	RetentionDelete(ctx context.Context, cutoff time.Time, limit int) (RetentionBatch, error)
}

// RetentionBatch is what one RetentionDelete removed.
type RetentionBatch struct {
	Executions int64
	Events     int64 // events deleted row by row (not by partition)
	Commands   int64
	Loops      int64
	Blobs      int64
}

// Partitioner is implemented by drivers whose event table is partitioned
// by day (PostgreSQL). SQLite does not implement it.
type Partitioner interface {
	// EnsurePartitions creates the daily event partitions from now's UTC
	// day through days days later, skipping days already covered and days
	// the default partition already holds events of. It returns how many
	// it created.
	EnsurePartitions(ctx context.Context, now time.Time, days int) (int, error)
	// RetentionDropPartitions drops every event partition whose whole
	// range is older than cutoff. The events in it of executions still
	// kept (running, or ended at or after cutoff) are first moved to the
	// default partition in the same transaction, so nothing kept is lost.
	RetentionDropPartitions(ctx context.Context, cutoff time.Time) (PartitionDrop, error)
	// EventPartitions lists the event table's partitions by lower bound.
	EventPartitions(ctx context.Context) ([]EventPartition, error)
}

// PartitionDrop is what one RetentionDropPartitions did.
type PartitionDrop struct {
	Dropped int   // partitions dropped
	Moved   int64 // events of kept executions moved to the default partition
	Skipped int   // partitions left for the next run (lock not granted in time)
}

// EventPartition is one partition of the event table. Default is the
// DEFAULT partition (no bounds); From is 0 for one that starts at
// MINVALUE (the events from before partitioning, events_legacy).
type EventPartition struct {
	Name    string
	Default bool
	From    int64
	To      int64 // exclusive
}

// blobRefPrefix is how package flow stores a large result by reference:
// {"$ref":"blob:<id>","size":N} in a result column.
var blobRefPrefix = []byte(`{"$ref":"blob:`)

// BlobRefPattern is a LIKE pattern that matches every result column
// holding a blob reference (and, rarely, more: BlobRef decides).
const BlobRefPattern = `{"$ref":"blob:%`

// BlobRef returns the blob id a stored result references, if it is a
// reference. Drivers use it to find an execution's blobs.
func BlobRef(raw []byte) (int64, bool) {
	if !bytes.HasPrefix(raw, blobRefPrefix) {
		return 0, false
	}
	rest := raw[len(blobRefPrefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return id, err == nil
}
