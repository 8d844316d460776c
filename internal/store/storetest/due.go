package storetest

import (
	"fmt"
	"time"

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
			p.Status = store.CmdFailed
			_, err := b.finish(p)
			b.mustNil("CommandFinish", err)
		}},
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
	for i, s := range specs {
		if s.setup != nil {
			s.setup(cmds[i])
		}
		if s.due {
			w.due = append(w.due, cmds[i].EventID)
		}
	}
	b.finishExecution(ended.ExecutionID, store.ExecFailed)
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
			c := b.addCommand(e.ExecutionID, old)
			b.wantCommandIDs("CommandsDue before republish", b.due(b.now, b.now.Add(-time.Minute), 10), c.EventID)
			_, err := txDo(b, func(tx store.Tx) (store.Command, error) { return tx.CommandMarkRepublished(b.ctx(), c.EventID, b.now) })
			b.mustNil("CommandMarkRepublished", err)
			b.wantCommandIDs("CommandsDue right after republish", b.due(b.now, b.now.Add(-time.Minute), 10))
			// Once the new notification has aged it is due again.
			later := b.now.Add(time.Hour)
			b.wantCommandIDs("CommandsDue after the republish aged", b.due(later, later.Add(-time.Minute), 10), c.EventID)
		}},
		{"OutboxDeleteMakesDue", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now.Add(-time.Hour))
			m := b.newOutbox(c.EventID)
			b.addOutbox(m)
			b.wantCommandIDs("CommandsDue with a pending outbox row", b.due(b.now, b.now.Add(-time.Minute), 10))
			b.mustWrite("OutboxDelete", func(tx store.Tx) error { return tx.OutboxDelete(b.ctx(), []int64{m.ID}) })
			b.wantCommandIDs("CommandsDue after the outbox row was published", b.due(b.now, b.now.Add(-time.Minute), 10), c.EventID)
		}},
		{"Empty", func(b *bundle) {
			b.wantCommandIDs("CommandsDue on an empty store", b.due(b.now, b.now, 10))
		}},
	}
}
