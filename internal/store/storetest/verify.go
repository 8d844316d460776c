package storetest

import (
	"fmt"
	"strings"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// verifyCases plant each kind of broken invariant with plain Tx writes
// (what a bug in flow would do) and expect store.Verifier to report it by
// id, next to a world whose rows all agree, which must report nothing.
func verifyCases() []testCase {
	return []testCase{
		{"CleanStoreReportsNothing", func(b *bundle) {
			b.cleanWorld()
			for _, check := range store.VerifyChecks {
				if got := b.verify(check, b.verifyOpts()); len(got) > 0 {
					b.fatalf("%s on a consistent store reported %v", check, got)
				}
			}
			counts, err := b.verifier().VerifyCounts(b.ctx(), b.verifyOpts())
			b.mustNil("VerifyCounts", err)
			for _, k := range []string{"executions", "commands", "events", "loops", "outbox"} {
				if counts[k] == 0 {
					b.errorf("VerifyCounts[%q] = 0 on a world that has some (%v)", k, counts)
				}
			}
		}},
		{"TwoCompletions", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			c := b.completedCommand(e.ExecutionID)
			b.addEvent(e.ExecutionID, api.EvCommandCompleted, c) // a report applied twice
			b.wantViolation(store.CheckCompletedOnce, e.ExecutionID, c.EventID, "2 command.completed")
		}},
		{"TerminalWithoutEvent", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			b.finishExecution(e.ExecutionID, api.ExecFailed) // no playbook.failed
			b.wantViolation(store.CheckTerminalEvent, e.ExecutionID, 0, "no terminal event")
		}},
		{"TerminalEventWhileRunning", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			b.addEvent(e.ExecutionID, api.EvPlaybookCompleted, store.Command{})
			b.wantViolation(store.CheckTerminalEvent, e.ExecutionID, 0, "running")
		}},
		{"StatusDisagreesWithLastEvent", func(b *bundle) {
			b.cleanWorld()
			e := b.endedExecution(api.ExecCompleted)
			b.addEvent(e.ExecutionID, api.EvPlaybookFailed, store.Command{})
			b.wantViolation(store.CheckExecutionProjection, e.ExecutionID, 0, "playbook.failed")
		}},
		{"CommandStatusWithoutItsEvent", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			b.published(c.EventID)
			c = b.mustClaim(c.EventID, "w1", b.now)
			_, err := b.finish(completeParams(c, b.now)) // no command.completed
			b.mustNil("CommandFinish", err)
			b.wantViolation(store.CheckCommandProjection, e.ExecutionID, c.EventID, "is completed with 0")
		}},
		{"LiveCommandWithCompletion", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			c := b.addPublished(e.ExecutionID, b.now)
			b.addEvent(e.ExecutionID, api.EvCommandCompleted, c)
			b.wantViolation(store.CheckCommandProjection, e.ExecutionID, c.EventID, "is issued")
		}},
		{"LoopDoneWithoutIterations", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			l := b.addLoop(b.newLoop(e.ExecutionID))
			b.mustNil("LoopFinish", b.finishLoop(l.LoopID, api.LoopDone, jsonResult, b.now))
			b.wantViolation(store.CheckLoopProjection, e.ExecutionID, 0, fmt.Sprintf("loop %d", l.LoopID))
		}},
		{"LoopRunningButComplete", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			l := b.newLoop(e.ExecutionID)
			l.Total = 1
			b.addLoop(l)
			c := b.newCommand(e.ExecutionID, b.now)
			c.LoopID = l.LoopID
			b.completeCommand(c)
			b.wantViolation(store.CheckLoopProjection, e.ExecutionID, 0, "is running with 1 of 1")
		}},
		{"OrphanedOutboxRow", func(b *bundle) {
			b.cleanWorld()
			e := b.endedExecution(api.ExecCompleted)
			c := b.completedCommand(e.ExecutionID)
			row := b.newOutbox(c.EventID)
			row.AvailableAt = b.now
			b.addOutbox(row)
			b.wantViolation(store.CheckOutboxOrphan, e.ExecutionID, c.EventID, "its command is completed")
			gone := b.newOutbox(0)
			gone.MsgID, gone.AvailableAt = "no-such-query#2", b.now
			b.addOutbox(gone)
			b.wantViolation(store.CheckOutboxOrphan, 0, 0, "no command, query or build owns it")
		}},
		{"NotificationPendingTooLong", func(b *bundle) {
			b.cleanWorld()
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now.Add(-time.Hour)) // never published
			b.wantViolation(store.CheckNotification, e.ExecutionID, c.EventID, "pending since")
			// Within the reaper interval it is only late, not lost.
			opts := b.verifyOpts()
			opts.ReapInterval = 2 * time.Hour
			for _, v := range b.verify(store.CheckNotification, opts) {
				if v.CommandID == c.EventID {
					b.fatalf("a notification pending for less than the reaper interval was reported: %v", v)
				}
			}
		}},
		{"SinceAndLimit", func(b *bundle) {
			for range 2 {
				b.finishExecution(b.addExecution().ExecutionID, api.ExecFailed)
			}
			opts := b.verifyOpts()
			opts.Since = b.now.Add(time.Hour) // later than every execution id here
			if got := b.verify(store.CheckTerminalEvent, opts); len(got) > 0 {
				b.fatalf("Since after every execution still reported %v", got)
			}
			opts.Since, opts.Limit = time.Time{}, 1
			if got := b.verify(store.CheckTerminalEvent, opts); len(got) != 1 {
				b.fatalf("Limit 1 returned %d violations, want 1", len(got))
			}
		}},
	}
}

func (b *bundle) verifier() store.Verifier {
	b.t.Helper()
	v, ok := b.drv.(store.Verifier)
	if !ok {
		b.fatalf("driver does not implement store.Verifier")
	}
	return v
}

// verifyOpts checks everything as of b.now, with a minute's reaper interval.
func (b *bundle) verifyOpts() store.VerifyOptions {
	return store.VerifyOptions{Now: b.now, ReapInterval: time.Minute}
}

func (b *bundle) verify(check string, opts store.VerifyOptions) []store.Violation {
	b.t.Helper()
	got, err := b.verifier().VerifyCheck(b.ctx(), check, opts)
	b.mustNil("VerifyCheck "+check, err)
	for _, v := range got {
		if v.Check != check {
			b.fatalf("VerifyCheck %s returned a violation of check %q", check, v.Check)
		}
	}
	return got
}

// wantViolation requires check to report execID and cmdID with a detail
// containing detail, and nothing else (the clean world around it is clean).
func (b *bundle) wantViolation(check string, execID, cmdID int64, detail string) {
	b.t.Helper()
	got := b.verify(check, b.verifyOpts())
	for _, v := range got {
		if v.ExecutionID == execID && v.CommandID == cmdID && strings.Contains(v.Detail, detail) {
			return
		}
	}
	b.fatalf("%s reported %v, want execution %d command %d with %q", check, got, execID, cmdID, detail)
}

func (b *bundle) addEvent(execID int64, typ string, c store.Command) {
	b.t.Helper()
	b.mustWrite("EventInsert "+typ, func(tx store.Tx) error {
		return tx.EventInsert(b.ctx(), store.Event{EventID: b.ids.Next(), ExecutionID: execID, EventType: typ,
			Step: c.Step, CommandID: c.CommandID, CreatedAt: b.now})
	})
}

// completeCommand inserts c and runs it to completed, as flow records it:
// command.issued, the row, command.completed.
func (b *bundle) completeCommand(c store.Command) store.Command {
	b.t.Helper()
	b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
	b.addEvent(c.ExecutionID, api.EvCommandIssued, c)
	b.published(c.EventID)
	c = b.mustClaim(c.EventID, "w1", b.now)
	c, err := b.finish(completeParams(c, b.now))
	b.mustNil("CommandFinish", err)
	b.addEvent(c.ExecutionID, api.EvCommandCompleted, c)
	return c
}

func (b *bundle) completedCommand(execID int64) store.Command {
	b.t.Helper()
	return b.completeCommand(b.newCommand(execID, b.now))
}

// endedExecution is an execution ended with status and its terminal event.
func (b *bundle) endedExecution(status api.ExecStatus) store.Execution {
	b.t.Helper()
	e := b.addExecution()
	b.finishExecution(e.ExecutionID, status)
	typ := map[api.ExecStatus]string{api.ExecCompleted: api.EvPlaybookCompleted, api.ExecFailed: api.EvPlaybookFailed,
		api.ExecCancelled: api.EvExecCancelled}[status]
	b.addEvent(e.ExecutionID, typ, store.Command{})
	return e
}

// cleanWorld writes executions whose rows all agree: completed, failed and
// cancelled ones with their events, a running one with a live command, a
// done loop and a failed iteration retried to completion, a cancelled
// command, and an outbox row of a live command.
func (b *bundle) cleanWorld() {
	b.t.Helper()
	done := b.endedExecution(api.ExecCompleted)
	b.completedCommand(done.ExecutionID)
	b.endedExecution(api.ExecFailed)

	run := b.addExecution()
	b.addEvent(run.ExecutionID, api.EvPlaybookStarted, store.Command{})
	live := b.addPublished(run.ExecutionID, b.now)
	b.addEvent(run.ExecutionID, api.EvCommandIssued, live)
	row := b.newOutbox(live.EventID)
	row.AvailableAt = b.now
	b.addOutbox(row)

	l := b.newLoop(run.ExecutionID)
	l.Total = 2
	b.addLoop(l)
	for i := range 2 {
		c := b.newCommand(run.ExecutionID, b.now)
		c.LoopID, c.LoopIndex = l.LoopID, i
		if i == 1 { // failed first, then retried to completion
			f := c
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), f) })
			b.published(f.EventID)
			f = b.mustClaim(f.EventID, "w1", b.now)
			p := completeParams(f, b.now)
			p.Status = api.CmdFailed
			_, err := b.finish(p)
			b.mustNil("CommandFinish failed", err)
			b.addEvent(run.ExecutionID, api.EvCommandFailed, f)
			c = b.newCommand(run.ExecutionID, b.now)
			c.LoopID, c.LoopIndex, c.Retry = l.LoopID, i, 1
		}
		b.completeCommand(c)
	}
	b.mustNil("LoopFinish", b.finishLoop(l.LoopID, api.LoopDone, jsonResult, b.now))

	cancelled := b.addExecution()
	b.addPublished(cancelled.ExecutionID, b.now)
	b.mustWrite("CommandCancelExecution", func(tx store.Tx) error {
		_, err := tx.CommandCancelExecution(b.ctx(), cancelled.ExecutionID, b.now)
		return err
	})
	b.finishExecution(cancelled.ExecutionID, api.ExecCancelled)
	b.addEvent(cancelled.ExecutionID, api.EvExecCancelled, store.Command{})
}
