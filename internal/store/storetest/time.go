package storetest

import (
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// ragged returns a time with sub-microsecond digits in a non-UTC zone, and
// what the store must hand back for it: UTC, truncated (not rounded) to the
// microsecond.
func ragged(offset time.Duration) (in, want time.Time) {
	zone := time.FixedZone("UTC+2", 2*60*60)
	in = time.Date(2031, 5, 6, 7, 8, 9, 123456789, zone).Add(offset)
	return in, in.UTC().Truncate(time.Microsecond)
}

func timeCases() []testCase {
	return []testCase{
		{"MicrosecondUTC", func(b *bundle) {
			t1, w1 := ragged(0)
			t2, w2 := ragged(time.Hour)
			t3, w3 := ragged(2 * time.Hour)

			cat, err := txDo(b, func(tx store.Tx) (store.CatalogEntry, error) {
				return tx.CatalogInsert(b.ctx(), b.ids.Next(), "time/precision", "t", "c", t1)
			})
			b.mustNil("CatalogInsert", err)
			var d diff
			d.time("CatalogInsert result CreatedAt", cat.CreatedAt, w1)

			e := b.newExecution()
			e.StartedAt = t1
			ev := store.Event{EventID: b.ids.Next(), ExecutionID: e.ExecutionID, EventType: api.EvPlaybookStarted, CreatedAt: t1}
			c := b.newCommand(e.ExecutionID, t1)
			b.mustWrite("inserts with ragged times", func(tx store.Tx) error {
				if err := tx.ExecutionInsert(b.ctx(), e); err != nil {
					return err
				}
				if err := tx.EventInsert(b.ctx(), ev); err != nil {
					return err
				}
				return tx.CommandInsert(b.ctx(), c)
			})
			claimed, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandClaim(b.ctx(), store.ClaimParams{EventID: c.EventID, WorkerID: "w", Now: t2, LeaseTTL: leaseTTL})
			})
			b.mustNil("CommandClaim", err)
			d.time("CommandClaim result UpdatedAt", claimed.UpdatedAt, w2)
			d.timePtr("CommandClaim result LeaseExpires", claimed.LeaseExpires, leaseAt(w2))
			started, err := b.start(c.EventID, "w", 1, t3)
			b.mustNil("CommandStart", err)
			d.timePtr("CommandStart result LeaseExpires", started.LeaseExpires, leaseAt(w3))
			repub, err := txDo(b, func(tx store.Tx) (store.Command, error) { return tx.CommandMarkRepublished(b.ctx(), c.EventID, t3, "") })
			b.mustNil("CommandMarkRepublished", err)
			d.time("CommandMarkRepublished result PublishedAt", repub.PublishedAt, w3)
			b.mustWrite("ExecutionFinish", func(tx store.Tx) error {
				return tx.ExecutionFinish(b.ctx(), e.ExecutionID, api.ExecCompleted, nil, "", t2)
			})
			m := b.newOutbox(c.EventID)
			m.CreatedAt = t1
			b.addOutbox(m)

			b.mustRead("read back", func(q store.Querier) error {
				got, err := q.CatalogGet(b.ctx(), "time/precision", 0)
				b.mustNil("CatalogGet", err)
				d.time("catalog CreatedAt", got.CreatedAt, w1)
				ex, err := q.ExecutionGet(b.ctx(), e.ExecutionID)
				b.mustNil("ExecutionGet", err)
				d.time("execution StartedAt", ex.StartedAt, w1)
				d.timePtr("execution EndedAt", ex.EndedAt, &w2)
				evs, err := q.EventList(b.ctx(), e.ExecutionID)
				b.mustNil("EventList", err)
				if len(evs) != 1 {
					b.fatalf("EventList returned %d events, want 1", len(evs))
				}
				d.time("event CreatedAt", evs[0].CreatedAt, w1)
				cmd, err := q.CommandGet(b.ctx(), c.EventID)
				b.mustNil("CommandGet", err)
				d.time("command CreatedAt", cmd.CreatedAt, w1)
				d.time("command PublishedAt", cmd.PublishedAt, w3)
				d.time("command UpdatedAt", cmd.UpdatedAt, cmd.UpdatedAt.UTC().Truncate(time.Microsecond))
				d.timePtr("command LeaseExpires", cmd.LeaseExpires, leaseAt(w3))
				msgs, err := q.OutboxFetch(b.ctx(), w1, 10)
				b.mustNil("OutboxFetch", err)
				if len(msgs) != 1 {
					b.fatalf("OutboxFetch returned %d rows, want 1", len(msgs))
				}
				d.time("outbox CreatedAt", msgs[0].CreatedAt, w1)
				return nil
			})
			b.check("times must come back in UTC, truncated to the microsecond", d)
		}},
		{"NewFieldsMicrosecondUTC", func(b *bundle) {
			t1, w1 := ragged(0)
			t2, w2 := ragged(time.Hour)
			t3, w3 := ragged(2 * time.Hour)
			var d diff

			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, t1)
			c.AvailableAt = t2
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			cmd := b.getCommand(c.EventID)
			d.time("command AvailableAt", cmd.AvailableAt, w2)
			d.time("command PublishedAt (= AvailableAt)", cmd.PublishedAt, w2)
			notes := b.toNotify(w3, 10)
			if len(notes) != 1 || !notes[0].NotifyAt.Equal(w2) {
				b.fatalf("CommandsToNotify = %+v, want command %d due at the truncated AvailableAt %s", notes, c.EventID, w2.Format(time.RFC3339Nano))
			}
			d.time("notice NotifyAt", notes[0].NotifyAt, w2)
			b.wantNoticeIDs("CommandsToNotify 1µs before the truncated AvailableAt", b.toNotify(w2.Add(-time.Microsecond), 10))
			b.published(c.EventID)
			// The truncated AvailableAt is exactly the due threshold.
			b.wantCommandIDs("CommandsDue with unclaimedBefore = truncated AvailableAt", b.due(w3, w2, 10), c.EventID)

			m := b.newOutbox(c.EventID)
			m.CreatedAt, m.AvailableAt = t1, t2
			b.addOutbox(m)
			b.wantOutboxIDs("OutboxFetch 1µs before the truncated AvailableAt", b.fetchOutbox(w2.Add(-time.Microsecond), 10))
			msgs := b.fetchOutbox(w2, 10)
			b.wantOutboxIDs("OutboxFetch at the truncated AvailableAt", msgs, m.ID)
			d.time("outbox AvailableAt", msgs[0].AvailableAt, w2)

			l := b.newLoop(e.ExecutionID)
			l.CreatedAt, l.UpdatedAt = t1, t2
			b.addLoop(l)
			got := b.getLoop(l.LoopID)
			d.time("loop CreatedAt", got.CreatedAt, w1)
			d.time("loop UpdatedAt", got.UpdatedAt, w2)
			b.mustNil("LoopFinish", b.finishLoop(l.LoopID, api.LoopDone, jsonResult, t3))
			d.time("loop UpdatedAt after LoopFinish", b.getLoop(l.LoopID).UpdatedAt, w3)

			cred := b.newCredential("timed")
			cred.CreatedAt, cred.UpdatedAt = t1, t2
			b.putCredential(cred)
			gc, err := b.getCredential("timed")
			b.mustNil("CredentialGet", err)
			d.time("credential CreatedAt", gc.CreatedAt, w1)
			d.time("credential UpdatedAt", gc.UpdatedAt, w2)
			b.check("new times must come back in UTC, truncated to the microsecond", d)
		}},
		{"CommandInsertTruncatesPublishedAt", func(b *bundle) {
			// PublishedAt = CreatedAt must hold for the stored (truncated)
			// value, or CommandsDue's <= comparison drifts by the remainder.
			in, want := ragged(0)
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, in)
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			got := b.getCommand(c.EventID)
			var d diff
			d.time("CreatedAt", got.CreatedAt, want)
			d.time("PublishedAt", got.PublishedAt, want)
			b.check("command inserted with a ragged CreatedAt", d)
			b.published(c.EventID)
			// The truncated value is exactly the due threshold.
			b.wantCommandIDs("CommandsDue with unclaimedBefore = truncated CreatedAt", b.due(want.Add(time.Hour), want, 10), c.EventID)
		}},
	}
}
