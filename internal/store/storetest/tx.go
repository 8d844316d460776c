package storetest

import (
	"context"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// fetchOutbox reads the outbox as the publisher would at now.
func (b *bundle) fetchOutbox(now time.Time, limit int) []store.OutboxMsg {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.OutboxMsg, error) { return q.OutboxFetch(b.ctx(), now, limit) })
	b.mustNil("OutboxFetch", err)
	return list
}

func (b *bundle) wantOutboxIDs(what string, got []store.OutboxMsg, want ...int64) {
	b.t.Helper()
	ids := make([]int64, len(got))
	for i, m := range got {
		ids[i] = m.ID
	}
	b.wantIDs(what, ids, want)
}

func outboxCases() []testCase {
	return []testCase{
		{"FetchOrderLimitRoundTrip", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			m1, m2, m3 := b.newOutbox(c.EventID), b.newOutbox(c.EventID), b.newOutbox(c.EventID)
			// Payload is opaque bytes, not text.
			m2.Payload = []byte{0x00, 0xff, '{', 0x80, '\n'}
			m3.CreatedAt = b.now.Add(time.Second)
			b.addOutbox(m3, m1, m2)
			later := b.now.Add(time.Hour) // every row is available by then
			got := b.fetchOutbox(later, 10)
			b.wantOutboxIDs("OutboxFetch (id asc)", got, m1.ID, m2.ID, m3.ID)
			for i, want := range []store.OutboxMsg{m1, m2, m3} {
				b.wantOutbox(fmt.Sprintf("OutboxFetch[%d]", i), got[i], want)
			}
			b.wantOutboxIDs("OutboxFetch limit 2", b.fetchOutbox(later, 2), m1.ID, m2.ID)
		}},
		{"TraceParentRoundTrip", func(b *bundle) {
			// The relay sends the row's traceparent as a NATS header, so
			// the worker's spans join the trace of the request that wrote it.
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			traced, untraced := b.newOutbox(c.EventID), b.newOutbox(c.EventID)
			traced.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			b.addOutbox(traced, untraced)
			got := b.fetchOutbox(b.now.Add(time.Hour), 10)
			b.wantOutboxIDs("OutboxFetch", got, traced.ID, untraced.ID)
			b.wantOutbox("OutboxFetch traced row", got[0], traced)
			b.wantOutbox("OutboxFetch untraced row", got[1], untraced)
		}},
		{"Delete", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			m1, m2, m3 := b.newOutbox(c.EventID), b.newOutbox(c.EventID), b.newOutbox(c.EventID)
			b.addOutbox(m1, m2, m3)
			b.mustWrite("OutboxDelete with a missing id", func(tx store.Tx) error {
				return tx.OutboxDelete(b.ctx(), []int64{m3.ID, b.ids.Next(), m1.ID})
			})
			b.wantOutboxIDs("OutboxFetch after delete", b.fetchOutbox(b.now, 10), m2.ID)
			b.mustWrite("OutboxDelete of nothing", func(tx store.Tx) error { return tx.OutboxDelete(b.ctx(), nil) })
			b.mustWrite("OutboxDelete of only missing ids", func(tx store.Tx) error {
				return tx.OutboxDelete(b.ctx(), []int64{m1.ID, b.ids.Next()})
			})
			b.wantOutboxIDs("OutboxFetch after deleting nothing", b.fetchOutbox(b.now, 10), m2.ID)
		}},
		{"FetchSkipsNotYetAvailable", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			deferred := b.newOutbox(c.EventID) // lowest id, held back by a backoff
			deferred.AvailableAt = b.now.Add(time.Minute)
			ready := b.newOutbox(c.EventID) // zero AvailableAt: available at CreatedAt
			early := b.newOutbox(c.EventID)
			early.AvailableAt = b.now.Add(-time.Hour) // before CreatedAt is allowed
			future := b.newOutbox(c.EventID)
			future.CreatedAt = b.now.Add(30 * time.Second) // zero AvailableAt follows CreatedAt
			b.addOutbox(future, early, ready, deferred)

			b.wantOutboxIDs("OutboxFetch at now", b.fetchOutbox(b.now, 10), ready.ID, early.ID)
			// A deferred row with a lower id must not use up the limit.
			b.wantOutboxIDs("OutboxFetch at now, limit 1", b.fetchOutbox(b.now, 1), ready.ID)
			b.wantOutboxIDs("OutboxFetch just before the deferred row is available",
				b.fetchOutbox(deferred.AvailableAt.Add(-time.Microsecond), 10), ready.ID, early.ID, future.ID)
			got := b.fetchOutbox(deferred.AvailableAt, 10)
			b.wantOutboxIDs("OutboxFetch exactly at AvailableAt", got, deferred.ID, ready.ID, early.ID, future.ID)
			for i, want := range []store.OutboxMsg{deferred, ready, early, future} {
				b.wantOutbox(fmt.Sprintf("OutboxFetch[%d]", i), got[i], want)
			}
		}},
		{"FetchEmpty", func(b *bundle) {
			b.wantOutboxIDs("OutboxFetch on an empty store", b.fetchOutbox(b.now, 10))
		}},
	}
}

func (b *bundle) stats() store.Stats {
	b.t.Helper()
	s, err := readDo(b, func(q store.Querier) (store.Stats, error) { return q.Stats(b.ctx()) })
	b.mustNil("Stats", err)
	return s
}

func statsCases() []testCase {
	return []testCase{
		{"Empty", func(b *bundle) {
			if s := b.stats(); s != (store.Stats{}) {
				b.fatalf("Stats on an empty store = %+v, want zeros", s)
			}
		}},
		{"Counts", func(b *bundle) {
			e := b.addExecution()
			b.addExecution()
			b.finishExecution(b.addExecution().ExecutionID, api.ExecCompleted)
			b.finishExecution(b.addExecution().ExecutionID, api.ExecCancelled)

			b.addCommand(e.ExecutionID, b.now)                                  // issued
			b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "w", b.now) // claimed
			r := b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "w", b.now)
			_, err := b.start(r.EventID, "w", 1, b.now) // running
			b.mustNil("CommandStart", err)
			done := b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "w", b.now)
			_, err = b.finish(completeParams(done, b.now)) // completed
			b.mustNil("CommandFinish", err)

			b.addOutbox(b.newOutbox(r.EventID), b.newOutbox(r.EventID))
			// Two outbox rows plus the first notification of every command
			// (none published here), the completed one's included: the
			// relay clears it without publishing.
			want := store.Stats{ExecutionsRunning: 2, CommandsPending: 3, OutboxDepth: 6}
			if s := b.stats(); s != want {
				b.fatalf("Stats = %+v, want %+v", s, want)
			}
		}},
	}
}

func (b *bundle) catalogExists(q store.Querier, path string) bool {
	b.t.Helper()
	_, err := q.CatalogGet(b.ctx(), path, 0)
	if err == nil {
		return true
	}
	b.wantErr("CatalogGet "+path, err, store.ErrNotFound)
	return false
}

// wantCatalogPaths checks, through Driver.Read, which paths are committed.
func (b *bundle) wantCatalogPaths(what string, present, absent []string) {
	b.t.Helper()
	b.mustRead(what, func(q store.Querier) error {
		for _, p := range present {
			if !b.catalogExists(q, p) {
				b.fatalf("%s: %s is missing, want it committed", what, p)
			}
		}
		for _, p := range absent {
			if b.catalogExists(q, p) {
				b.fatalf("%s: %s is present, want it gone", what, p)
			}
		}
		return nil
	})
}

func (b *bundle) insertCatalog(tx store.Tx, path string) {
	b.t.Helper()
	_, err := tx.CatalogInsert(b.ctx(), b.ids.Next(), path, path, "content", b.now)
	b.mustNil("CatalogInsert "+path, err)
}

func txCases() []testCase {
	return []testCase{
		{"RollbackDiscards", func(b *bundle) {
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }() // harmless after Commit/Rollback
			b.insertCatalog(tx, "rolled/back")
			b.mustNil("Rollback", tx.Rollback(b.ctx()))
			b.wantCatalogPaths("after Rollback", nil, []string{"rolled/back"})
		}},
		{"RollbackAfterCommitIsHarmless", func(b *bundle) {
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }() // harmless after Commit/Rollback
			b.insertCatalog(tx, "kept")
			b.mustNil("Commit", tx.Commit(b.ctx()))
			// The error, if any, is ignorable (ErrTxDone-like); the point is
			// that committed work survives and nothing panics.
			if err := tx.Rollback(b.ctx()); err != nil {
				b.t.Logf("[%s driver] Rollback after Commit returned %v", b.drv.Name(), err)
			}
			b.wantCatalogPaths("after Rollback following Commit", []string{"kept"}, nil)
			// The driver is still usable: the connection went back clean.
			b.addCatalog("after", "x")
		}},
		{"CommitWithEndedContextKeepsNothing", func(b *bundle) {
			// Commit takes the caller's context: once it has ended, the
			// work is not committed, and a rollback with a live context
			// still ends the transaction cleanly.
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			b.insertCatalog(tx, "too/late")
			ended, cancel := context.WithCancel(b.ctx())
			cancel()
			if err := tx.Commit(ended); err == nil {
				b.fatalf("Commit with an ended context = nil, want an error")
			}
			_ = tx.Rollback(b.ctx())
			b.wantCatalogPaths("after a Commit whose context had ended", nil, []string{"too/late"})
			b.addCatalog("after", "x") // the driver is still usable
		}},
		{"SavepointRollbackKeepsEarlierWork", func(b *bundle) {
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }()
			b.insertCatalog(tx, "sp/before")
			b.mustNil("Savepoint", tx.Savepoint(b.ctx(), "sp0"))
			b.insertCatalog(tx, "sp/inside")
			b.mustNil("RollbackTo", tx.RollbackTo(b.ctx(), "sp0"))
			b.mustNil("Release after RollbackTo", tx.Release(b.ctx(), "sp0"))
			if b.catalogExists(tx, "sp/inside") {
				b.fatalf("work rolled back to a savepoint is still visible inside the transaction")
			}
			if !b.catalogExists(tx, "sp/before") {
				b.fatalf("RollbackTo dropped work done before the savepoint")
			}
			b.insertCatalog(tx, "sp/after")
			b.mustNil("Commit", tx.Commit(b.ctx()))
			b.wantCatalogPaths("after commit", []string{"sp/before", "sp/after"}, []string{"sp/inside"})
		}},
		{"SavepointReleaseKeepsWork", func(b *bundle) {
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }()
			for i := range 3 {
				sp := fmt.Sprintf("sp%d", i)
				b.mustNil("Savepoint "+sp, tx.Savepoint(b.ctx(), sp))
				b.insertCatalog(tx, "released/"+sp)
				b.mustNil("Release "+sp, tx.Release(b.ctx(), sp))
			}
			b.mustNil("Commit", tx.Commit(b.ctx()))
			b.wantCatalogPaths("after commit", []string{"released/sp0", "released/sp1", "released/sp2"}, nil)
		}},
		{"SavepointRecoversFromError", func(b *bundle) {
			// One caller's failed statement must not poison the shared
			// transaction (PostgreSQL aborts it until RollbackTo).
			dup := b.addExecution()
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }()
			b.insertCatalog(tx, "shared/first")
			b.mustNil("Savepoint", tx.Savepoint(b.ctx(), "sp1"))
			err = tx.ExecutionInsert(b.ctx(), dup)
			if err == nil {
				// A driver may queue the insert; its error must arrive
				// by Release at the latest, and as the insert's own.
				err = tx.Release(b.ctx(), "sp1")
			}
			b.wantErr("ExecutionInsert of a duplicate execution_id (or the Release after it)", err, store.ErrConflict)
			b.mustNil("RollbackTo after a failed statement", tx.RollbackTo(b.ctx(), "sp1"))
			b.mustNil("Release", tx.Release(b.ctx(), "sp1"))
			b.insertCatalog(tx, "shared/second")
			b.mustNil("Commit", tx.Commit(b.ctx()))
			b.wantCatalogPaths("after commit", []string{"shared/first", "shared/second"}, nil)
		}},
		{"ReadSeesCommittedOnlyAndDoesNotBlock", func(b *bundle) {
			b.addCatalog("committed", "x")
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }()
			b.insertCatalog(tx, "uncommitted")
			// A writer is open (on SQLite it holds the write lock); Read
			// must still run promptly and see only committed rows.
			ctx, cancel := context.WithTimeout(b.ctx(), blockingTimeout)
			defer cancel()
			err = b.drv.Read(ctx, func(q store.Querier) error {
				if _, err := q.CatalogGet(ctx, "committed", 0); err != nil {
					return fmt.Errorf("committed row: %w", err)
				}
				_, err := q.CatalogGet(ctx, "uncommitted", 0)
				b.wantErr("Read of another transaction's uncommitted row", err, store.ErrNotFound)
				return nil
			})
			b.mustNil(fmt.Sprintf("Read while a write transaction is open (must not wait for it, limit %s)", blockingTimeout), err)
			b.mustNil("Commit", tx.Commit(b.ctx()))
			b.wantCatalogPaths("Read after commit", []string{"committed", "uncommitted"}, nil)
		}},
		{"TxReadsItsOwnWrites", func(b *bundle) {
			// Build fixtures first: on SQLite a second writer would wait
			// for this transaction forever.
			e := b.newExecution()
			tx, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin", err)
			defer func() { _ = tx.Rollback(b.ctx()) }()
			b.mustNil("ExecutionInsert", tx.ExecutionInsert(b.ctx(), e))
			c := b.newCommand(e.ExecutionID, b.now)
			b.mustNil("CommandInsert", tx.CommandInsert(b.ctx(), c))
			got, err := tx.ExecutionGet(b.ctx(), e.ExecutionID)
			b.mustNil("ExecutionGet in the same tx", err)
			b.wantExecution("ExecutionGet in the same tx", got, e)
			cmd, err := tx.CommandGet(b.ctx(), c.EventID)
			b.mustNil("CommandGet in the same tx", err)
			b.wantCommand("CommandGet in the same tx", cmd, issued(c))
		}},
	}
}
