package storetest

import (
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// published clears the commands' pending notifications at their current
// Publishes, as the relay does once JetStream acknowledged them.
func (b *bundle) published(eventIDs ...int64) {
	b.t.Helper()
	marks := make([]store.Notified, len(eventIDs))
	for i, id := range eventIDs {
		marks[i] = store.Notified{EventID: id, Publishes: b.getCommand(id).Publishes}
	}
	n, err := txDo(b, func(tx store.Tx) (int, error) { return tx.CommandNotified(b.ctx(), marks) })
	b.mustNil("CommandNotified", err)
	if n != len(marks) {
		b.fatalf("CommandNotified cleared %d of %d pending notifications", n, len(marks))
	}
}

// addPublished inserts a command whose first notification went out.
func (b *bundle) addPublished(execID int64, created time.Time) store.Command {
	b.t.Helper()
	c := b.addCommand(execID, created)
	b.published(c.EventID)
	return c
}

func (b *bundle) toNotify(now time.Time, limit int) []store.Notice {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.Notice, error) { return q.CommandsToNotify(b.ctx(), now, limit) })
	b.mustNil("CommandsToNotify", err)
	return list
}

func (b *bundle) notified(marks ...store.Notified) int {
	b.t.Helper()
	n, err := txDo(b, func(tx store.Tx) (int, error) { return tx.CommandNotified(b.ctx(), marks) })
	b.mustNil("CommandNotified", err)
	return n
}

func (b *bundle) listCommands(execID int64) []store.Command {
	b.t.Helper()
	list, err := readDo(b, func(q store.Querier) ([]store.Command, error) { return q.CommandListByExecution(b.ctx(), execID) })
	b.mustNil("CommandListByExecution", err)
	return list
}

func (b *bundle) wantNoticeIDs(what string, got []store.Notice, want ...int64) {
	b.t.Helper()
	ids := make([]int64, len(got))
	for i, n := range got {
		ids[i] = n.EventID
	}
	b.wantIDs(what, ids, want)
}

func notifyCases() []testCase {
	return []testCase{
		{"InsertMakesPendingAtAvailableAt", func(b *bundle) {
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now.Add(-time.Minute))
			c.Pool, c.TraceParent = "gpu", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
			later := b.newCommand(e.ExecutionID, b.now.Add(-time.Minute))
			later.AvailableAt = b.now.Add(time.Minute) // a retry in its backoff
			b.mustWrite("CommandInsert", func(tx store.Tx) error {
				if err := tx.CommandInsert(b.ctx(), c); err != nil {
					return err
				}
				return tx.CommandInsert(b.ctx(), later)
			})
			got := b.toNotify(b.now, 10)
			want := store.Notice{EventID: c.EventID, ExecutionID: e.ExecutionID, CommandID: c.CommandID, Step: c.Step, Pool: "gpu",
				Status: api.CmdIssued, Publishes: 1, NotifyAt: c.CreatedAt, TraceParent: c.TraceParent}
			if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
				b.fatalf("CommandsToNotify = %+v, want only %+v (the retry is not due before its AvailableAt)", got, want)
			}
			b.wantNoticeIDs("CommandsToNotify at the retry's AvailableAt", b.toNotify(later.AvailableAt, 10), c.EventID, later.EventID)
		}},
		{"OrderAndLimit", func(b *bundle) {
			e := b.addExecution()
			// Due times out of id order, two equal: by due time, then id.
			at := []time.Duration{-time.Minute, -3 * time.Minute, -time.Minute, -2 * time.Minute}
			cmds := make([]store.Command, len(at))
			for i, d := range at {
				cmds[i] = b.newCommand(e.ExecutionID, b.now.Add(d))
			}
			b.mustWrite("CommandInsert", func(tx store.Tx) error {
				for i := len(cmds) - 1; i >= 0; i-- {
					if err := tx.CommandInsert(b.ctx(), cmds[i]); err != nil {
						return err
					}
				}
				return nil
			})
			order := []int64{cmds[1].EventID, cmds[3].EventID, cmds[0].EventID, cmds[2].EventID}
			b.wantNoticeIDs("CommandsToNotify", b.toNotify(b.now, 10), order...)
			b.wantNoticeIDs("CommandsToNotify limit 2", b.toNotify(b.now, 2), order[:2]...)
			b.wantNoticeIDs("CommandsToNotify limit 0", b.toNotify(b.now, 0))
			b.wantNoticeIDs("CommandsToNotify before any is due", b.toNotify(b.now.Add(-4*time.Minute), 10))
			if n := b.notified(store.Notified{EventID: cmds[1].EventID, Publishes: 1}, store.Notified{EventID: cmds[3].EventID, Publishes: 1}); n != 2 {
				b.fatalf("CommandNotified of the first two cleared %d, want 2", n)
			}
			b.wantNoticeIDs("CommandsToNotify after the first two were published", b.toNotify(b.now, 10), order[2:]...)
		}},
		{"RepublishDuringPublishIsKept", func(b *bundle) {
			// The relay reads publishes 1; before it clears, the reaper (or
			// a release) asks for a new notification: clearing the old one
			// must not drop the new.
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now.Add(-time.Hour))
			read := b.toNotify(b.now, 10)
			b.wantNoticeIDs("CommandsToNotify", read, c.EventID)
			again, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandMarkRepublished(b.ctx(), c.EventID, b.now, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			})
			b.mustNil("CommandMarkRepublished", err)
			if n := b.notified(store.Notified{EventID: c.EventID, Publishes: read[0].Publishes}); n != 0 {
				b.fatalf("CommandNotified with the stale publishes cleared %d, want 0", n)
			}
			got := b.toNotify(b.now, 10)
			if len(got) != 1 || got[0].Publishes != 2 || got[0].Publishes != again.Publishes || !got[0].NotifyAt.Equal(b.now) ||
				got[0].TraceParent != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
				b.fatalf("CommandsToNotify after the republish = %+v, want the command with publishes 2, due %s, the new traceparent", got, b.now)
			}
			if n := b.notified(store.Notified{EventID: c.EventID, Publishes: 2}); n != 1 {
				b.fatalf("CommandNotified with the current publishes cleared %d, want 1", n)
			}
			b.wantNoticeIDs("CommandsToNotify once the republish went out", b.toNotify(b.now.Add(time.Hour), 10))
			if n := b.notified(store.Notified{EventID: c.EventID, Publishes: 2}); n != 0 {
				b.fatalf("CommandNotified of a cleared notification cleared %d, want 0", n)
			}
		}},
		{"EndedCommands", func(b *bundle) {
			// A command that finished with its notification still pending
			// is listed with its status (the relay clears it unsent); a
			// cancelled execution's commands drop theirs.
			e := b.addExecution()
			done := b.addCommand(e.ExecutionID, b.now.Add(-time.Hour))
			_, err := b.finish(completeParams(b.mustClaim(done.EventID, "w", b.now), b.now))
			b.mustNil("CommandFinish", err)
			got := b.toNotify(b.now, 10)
			if len(got) != 1 || got[0].EventID != done.EventID || got[0].Status != api.CmdCompleted {
				b.fatalf("CommandsToNotify = %+v, want the completed command with status completed", got)
			}
			b.published(done.EventID)
			other := b.addExecution()
			b.addCommand(other.ExecutionID, b.now.Add(-time.Hour))
			retry := b.newCommand(other.ExecutionID, b.now)
			retry.AvailableAt = b.now.Add(time.Hour)
			b.mustWrite("CommandInsert retry", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), retry) })
			n, err := txDo(b, func(tx store.Tx) (int, error) { return tx.CommandCancelExecution(b.ctx(), other.ExecutionID, b.now) })
			b.mustNil("CommandCancelExecution", err)
			if n != 2 {
				b.fatalf("CommandCancelExecution = %d, want 2", n)
			}
			b.wantNoticeIDs("CommandsToNotify after the execution was cancelled", b.toNotify(b.now.Add(2*time.Hour), 10))
			if s := b.stats(); s.OutboxDepth != 0 {
				b.fatalf("Stats.OutboxDepth = %d with nothing pending, want 0", s.OutboxDepth)
			}
		}},
		{"NotifiedIgnoresUnknown", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			if n := b.notified(); n != 0 {
				b.fatalf("CommandNotified of nothing = %d, want 0", n)
			}
			if n := b.notified(store.Notified{EventID: b.ids.Next(), Publishes: 1}, store.Notified{EventID: c.EventID, Publishes: 1}); n != 1 {
				b.fatalf("CommandNotified of an unknown and a pending command = %d, want 1", n)
			}
			b.wantNoticeIDs("CommandsToNotify", b.toNotify(b.now, 10))
		}},
	}
}
