package storetest

import (
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

func (b *bundle) due(now, unclaimedBefore time.Time, limit int) []store.Command {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.Command, error) {
		return q.CommandsDue(b.ctx(), now, unclaimedBefore, limit)
	})
	b.mustNil("CommandsDue", err)
	return list
}

func (b *bundle) newOutbox(eventID int64) store.OutboxMsg {
	id := b.ids.Next()
	return store.OutboxMsg{
		ID:        id,
		EventID:   eventID,
		Subject:   "millrace.commands.shell",
		MsgID:     fmt.Sprintf("%d-1", eventID),
		Payload:   []byte(fmt.Sprintf(`{"event_id": %d}`, eventID)),
		CreatedAt: b.now,
	}
}

func (b *bundle) addOutbox(msgs ...store.OutboxMsg) {
	b.t.Helper()
	b.mustWrite("OutboxInsert", func(tx store.Tx) error {
		for _, m := range msgs {
			if err := tx.OutboxInsert(b.ctx(), m); err != nil {
				return err
			}
		}
		return nil
	})
}

// republish records a new notification of a command at at, and the
// relay publishing it.
func (b *bundle) republish(eventID int64, at time.Time) store.Command {
	b.t.Helper()
	c, err := txDo(b, func(tx store.Tx) (store.Command, error) { return tx.CommandMarkRepublished(b.ctx(), eventID, at, "") })
	b.mustNil("CommandMarkRepublished", err)
	b.published(eventID)
	return c
}

// release is what the server does when a worker gives a command back: end
// the lease now and notify the command again, in one transaction; then the
// relay publishes it.
func (b *bundle) release(c store.Command, now time.Time) {
	b.t.Helper()
	b.mustWrite("release (CommandHeartbeat ttl 0 + CommandMarkRepublished)", func(tx store.Tx) error {
		if _, err := tx.CommandHeartbeat(b.ctx(), c.EventID, c.WorkerID, c.Attempt, c.ClaimTokenID, now, 0); err != nil {
			return err
		}
		_, err := tx.CommandMarkRepublished(b.ctx(), c.EventID, now, "")
		return err
	})
	b.published(c.EventID)
}

// dueWorld is a store holding one command in each situation CommandsDue
// must tell apart, all relative to now and unclaimedBefore.
type dueWorld struct {
	now, unclaimedBefore time.Time
	due                  []int64 // expected result, event_id order
	first                store.Command
}

func (b *bundle) buildDueWorld() dueWorld {
	b.t.Helper()
	w := dueWorld{now: b.now, unclaimedBefore: b.now.Add(-time.Minute)}
	old := b.now.Add(-10 * time.Minute)
	run := b.addExecution()
	ended := b.addExecution()

	type spec struct {
		name  string
		exec  int64
		due   bool
		setup func(c store.Command)
	}
	claimAt := func(at time.Time) func(store.Command) {
		return func(c store.Command) { b.mustClaim(c.EventID, "w", at) }
	}
	specs := []spec{
		{"issued long ago", run.ExecutionID, true, nil},
		{"issued exactly at unclaimedBefore", run.ExecutionID, true, nil},
		{"issued recently", run.ExecutionID, false, nil},
		{"claimed, lease expired", run.ExecutionID, true, claimAt(old)},
		{"running, lease expired", run.ExecutionID, true, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			_, err := b.start(c.EventID, "w", 1, old)
			b.mustNil("CommandStart", err)
		}},
		{"claimed, lease expires exactly now", run.ExecutionID, true, claimAt(b.now.Add(-leaseTTL))},
		{"expired lease, re-notified before it expired", run.ExecutionID, true, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			b.republish(c.EventID, old.Add(leaseTTL/2))
		}},
		{"expired lease, re-notified after it expired, long ago", run.ExecutionID, true, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			b.republish(c.EventID, w.unclaimedBefore)
		}},
		{"expired lease, re-notified recently", run.ExecutionID, false, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			b.republish(c.EventID, b.now)
		}},
		{"released now (lease = now, re-notified now)", run.ExecutionID, false, func(c store.Command) {
			b.release(b.mustClaim(c.EventID, "w", b.now.Add(-time.Second)), b.now)
		}},
		{"claimed, live lease", run.ExecutionID, false, claimAt(b.now)},
		{"running, live lease", run.ExecutionID, false, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			_, err := b.heartbeat(c.EventID, "w", 1, b.now)
			b.mustNil("CommandHeartbeat", err)
			_, err = b.start(c.EventID, "w", 1, b.now)
			b.mustNil("CommandStart", err)
		}},
		{"completed", run.ExecutionID, false, func(c store.Command) {
			_, err := b.finish(completeParams(b.mustClaim(c.EventID, "w", old), old))
			b.mustNil("CommandFinish", err)
		}},
		{"failed", run.ExecutionID, false, func(c store.Command) {
			p := completeParams(b.mustClaim(c.EventID, "w", old), old)
			p.Status = api.CmdFailed
			_, err := b.finish(p)
			b.mustNil("CommandFinish", err)
		}},
		{"issued long ago, notification pending", run.ExecutionID, false, nil},
		{"expired lease, re-notification pending", run.ExecutionID, false, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			_, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandMarkRepublished(b.ctx(), c.EventID, w.unclaimedBefore.Add(-time.Minute), "")
			})
			b.mustNil("CommandMarkRepublished", err)
		}},
		// Outbox rows written before migration 9 still hold a command back.
		{"issued long ago, outbox row pending", run.ExecutionID, false, func(c store.Command) {
			b.addOutbox(b.newOutbox(c.EventID))
		}},
		{"claimed and expired, outbox row pending", run.ExecutionID, false, func(c store.Command) {
			b.mustClaim(c.EventID, "w", old)
			b.addOutbox(b.newOutbox(c.EventID))
		}},
		{"issued long ago in an ended execution", ended.ExecutionID, false, nil},
		{"expired lease in an ended execution", ended.ExecutionID, false, claimAt(old)},
	}
	created := map[string]time.Time{
		"issued exactly at unclaimedBefore": w.unclaimedBefore,
		"issued recently":                   b.now,
	}
	cmds := make([]store.Command, len(specs))
	for i, s := range specs {
		at, ok := created[s.name]
		if !ok {
			at = old
		}
		cmds[i] = b.newCommand(s.exec, at)
	}
	// Insert in reverse id order so only an ORDER BY event_id can pass.
	b.mustWrite("CommandInsert", func(tx store.Tx) error {
		for i := len(cmds) - 1; i >= 0; i-- {
			if err := tx.CommandInsert(b.ctx(), cmds[i]); err != nil {
				return fmt.Errorf("%s: %w", specs[i].name, err)
			}
		}
		return nil
	})
	// The relay published every first notification but these.
	pending := map[string]bool{
		"issued long ago, notification pending":  true,
		"expired lease, re-notification pending": true,
	}
	for i, s := range specs {
		if !pending[s.name] {
			b.published(cmds[i].EventID)
		}
	}
	for i, s := range specs {
		if s.setup != nil {
			s.setup(cmds[i])
		}
		if s.due {
			w.due = append(w.due, cmds[i].EventID)
		}
	}
	b.finishExecution(ended.ExecutionID, api.ExecFailed)
	w.first = b.getCommand(w.due[0])
	b.t.Logf("[%s driver] CommandsDue fixture, event_id order:", b.drv.Name())
	for i, s := range specs {
		b.t.Logf("  %d %-40s due=%v", cmds[i].EventID, s.name, s.due)
	}
	return w
}

func dueCases() []testCase {
	return []testCase{
		{"Rules", func(b *bundle) {
			w := b.buildDueWorld()
			got := b.due(w.now, w.unclaimedBefore, 100)
			b.wantCommandIDs("CommandsDue (see the fixture log for which command is which)", got, w.due...)
			b.wantCommand("CommandsDue[0] full row", got[0], w.first)
		}},
		{"LimitKeepsOrder", func(b *bundle) {
			w := b.buildDueWorld()
			b.wantCommandIDs("CommandsDue limit 2", b.due(w.now, w.unclaimedBefore, 2), w.due[:2]...)
			b.wantCommandIDs("CommandsDue limit 1", b.due(w.now, w.unclaimedBefore, 1), w.due[:1]...)
		}},
		{"RepublishedIsNoLongerDue", func(b *bundle) {
			e := b.addExecution()
			old := b.now.Add(-time.Hour)
			c := b.addPublished(e.ExecutionID, old)
			b.wantCommandIDs("CommandsDue before republish", b.due(b.now, b.now.Add(-time.Minute), 10), c.EventID)
			_, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandMarkRepublished(b.ctx(), c.EventID, b.now, "")
			})
			b.mustNil("CommandMarkRepublished", err)
			b.wantCommandIDs("CommandsDue right after republish", b.due(b.now, b.now.Add(-time.Minute), 10))
			later := b.now.Add(time.Hour)
			b.wantCommandIDs("CommandsDue with the republish aged but still not published", b.due(later, later.Add(-time.Minute), 10))
			// Once the new notification went out and aged it is due again.
			b.published(c.EventID)
			b.wantCommandIDs("CommandsDue after the republish aged", b.due(later, later.Add(-time.Minute), 10), c.EventID)
		}},
		{"ExpiredLeaseRepublishedWaits", func(b *bundle) {
			e := b.addExecution()
			old := b.now.Add(-time.Hour)
			c := b.addPublished(e.ExecutionID, old)
			b.mustClaim(c.EventID, "w", old)
			b.wantCommandIDs("CommandsDue with an expired lease", b.due(b.now, b.now.Add(-time.Minute), 10), c.EventID)
			// The reaper notifies it again: published_at = now >= lease.
			b.republish(c.EventID, b.now)
			b.wantCommandIDs("CommandsDue right after the expired lease was re-notified", b.due(b.now, b.now.Add(-time.Minute), 10))
			later := b.now.Add(time.Minute)
			b.wantCommandIDs("CommandsDue with unclaimedBefore just short of the re-notification",
				b.due(later, b.now.Add(-time.Microsecond), 10))
			b.wantCommandIDs("CommandsDue with unclaimedBefore = the re-notification (still not claimed)",
				b.due(later, b.now, 10), c.EventID)
		}},
		{"ReleasedIsNotDue", func(b *bundle) {
			e := b.addExecution()
			c := b.addPublished(e.ExecutionID, b.now.Add(-time.Hour))
			claimed := b.mustClaim(c.EventID, "w", b.now.Add(-time.Second))
			b.release(claimed, b.now)
			got := b.getCommand(c.EventID)
			if got.LeaseExpires == nil || !got.LeaseExpires.Equal(b.now) || !got.PublishedAt.Equal(b.now) {
				b.fatalf("released command: lease %s, published_at %s; want both %s",
					fmtTimePtr(got.LeaseExpires), got.PublishedAt.Format(time.RFC3339Nano), b.now.Format(time.RFC3339Nano))
			}
			b.wantCommandIDs("CommandsDue right after a release", b.due(b.now, b.now.Add(-time.Minute), 10))
			later := b.now.Add(time.Hour)
			b.wantCommandIDs("CommandsDue once the release notification aged unclaimed",
				b.due(later, later.Add(-time.Minute), 10), c.EventID)
		}},
		{"RenotifiedLeasesDoNotStarveIssued", func(b *bundle) {
			// More expired, recently re-notified leases than the limit, all
			// ordered before an issued command that waited too long: the
			// re-notified ones must not fill the page.
			const limit = 2
			e := b.addExecution()
			old := b.now.Add(-time.Hour)
			for range limit + 1 {
				c := b.addPublished(e.ExecutionID, old)
				b.mustClaim(c.EventID, "w", old)
				b.republish(c.EventID, b.now.Add(-time.Second))
			}
			stale := b.addPublished(e.ExecutionID, old)
			b.wantCommandIDs("CommandsDue limit 2 behind 3 recently re-notified expired leases",
				b.due(b.now, b.now.Add(-time.Minute), limit), stale.EventID)
		}},
		{"OutboxDeleteMakesDue", func(b *bundle) {
			e := b.addExecution()
			c := b.addPublished(e.ExecutionID, b.now.Add(-time.Hour))
			m := b.newOutbox(c.EventID)
			b.addOutbox(m)
			b.wantCommandIDs("CommandsDue with a pending outbox row", b.due(b.now, b.now.Add(-time.Minute), 10))
			b.mustWrite("OutboxDelete", func(tx store.Tx) error { return tx.OutboxDelete(b.ctx(), []int64{m.ID}) })
			b.wantCommandIDs("CommandsDue after the outbox row was published", b.due(b.now, b.now.Add(-time.Minute), 10), c.EventID)
		}},
		{"DelayedCommandDueOnlyOnceAvailable", func(b *bundle) {
			// A retry inserted with a backoff: its unclaimed timer starts
			// when it becomes available, not when it was created.
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now.Add(-time.Hour))
			c.AvailableAt = b.now.Add(10 * time.Minute)
			c.Retry = 1
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			b.wantCommandIDs("CommandsDue before the command is available", b.due(b.now, b.now.Add(-time.Minute), 10))
			b.published(c.EventID)
			b.wantCommandIDs("CommandsDue with unclaimedBefore just short of AvailableAt",
				b.due(c.AvailableAt.Add(time.Hour), c.AvailableAt.Add(-time.Microsecond), 10))
			b.wantCommandIDs("CommandsDue with unclaimedBefore = AvailableAt",
				b.due(c.AvailableAt.Add(time.Hour), c.AvailableAt, 10), c.EventID)
		}},
		{"Empty", func(b *bundle) {
			b.wantCommandIDs("CommandsDue on an empty store", b.due(b.now, b.now, 10))
		}},
	}
}
