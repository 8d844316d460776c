package storetest

import (
	"errors"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// childCases: a child keyed to the command (and task) that started it,
// and a command the server holds while that child runs (issue 15).
func childCases() []testCase {
	return []testCase{
		{"ChildOf", func(b *bundle) {
			parent := b.addExecution()
			cmd := b.addCommand(parent.ExecutionID, b.now)
			child := b.newExecution()
			child.ParentExecutionID, child.Depth = parent.ExecutionID, 3
			child.ParentCommandID, child.ParentTask, child.ParentAttempt = cmd.EventID, 2, 1
			b.mustWrite("ExecutionInsert child", func(tx store.Tx) error { return tx.ExecutionInsert(b.ctx(), child) })
			got, err := readDo(b, func(q store.Querier) (store.Execution, error) {
				return q.ExecutionChildOf(b.ctx(), cmd.EventID, 2)
			})
			b.mustNil("ExecutionChildOf", err)
			b.wantExecution("ExecutionChildOf", got, child)
			if got.Depth != 3 || got.ParentCommandID != cmd.EventID || got.ParentTask != 2 || got.ParentAttempt != 1 {
				b.fatalf("ExecutionChildOf = depth %d command %d task %d attempt %d, want 3 %d 2 1",
					got.Depth, got.ParentCommandID, got.ParentTask, got.ParentAttempt, cmd.EventID)
			}
			_, err = readDo(b, func(q store.Querier) (store.Execution, error) {
				return q.ExecutionChildOf(b.ctx(), cmd.EventID, 0)
			})
			if !errors.Is(err, store.ErrNotFound) {
				b.fatalf("ExecutionChildOf of another task = %v, want ErrNotFound", err)
			}
		}},
		{"OneChildPerKey", func(b *bundle) {
			parent := b.addExecution()
			cmd := b.addCommand(parent.ExecutionID, b.now)
			first := b.newExecution()
			first.ParentExecutionID, first.ParentCommandID, first.ParentAttempt = parent.ExecutionID, cmd.EventID, 1
			b.mustWrite("ExecutionInsert child", func(tx store.Tx) error { return tx.ExecutionInsert(b.ctx(), first) })
			second := b.newExecution()
			second.ParentExecutionID, second.ParentCommandID, second.ParentAttempt = parent.ExecutionID, cmd.EventID, 2
			if err := b.write(func(tx store.Tx) error { return tx.ExecutionInsert(b.ctx(), second) }); err == nil {
				b.fatalf("a second child of command %d task 0 was inserted; the unique key must refuse it", cmd.EventID)
			}
			// Top-level executions (command 0) are never keyed.
			b.addExecution()
			b.addExecution()
		}},
		{"Hold", func(b *bundle) {
			exec := b.addExecution()
			cmd := b.addCommand(exec.ExecutionID, b.now)
			until := b.now.Add(24 * 3650 * 3600e9)
			got, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandHold(b.ctx(), cmd.EventID, "server", until, b.now)
			})
			b.mustNil("CommandHold", err)
			if got.Status != api.CmdRunning || got.Attempt != 1 || got.WorkerID != "server" {
				b.fatalf("CommandHold = %s attempt %d worker %q, want running attempt 1 worker server", got.Status, got.Attempt, got.WorkerID)
			}
			notices, err := readDo(b, func(q store.Querier) ([]store.Notice, error) {
				return q.CommandsToNotify(b.ctx(), until, 100)
			})
			b.mustNil("CommandsToNotify", err)
			for _, n := range notices {
				if n.EventID == cmd.EventID {
					b.fatalf("a held command still has a notification pending")
				}
			}
			_, err = txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandHold(b.ctx(), cmd.EventID, "server", until, b.now)
			})
			if !errors.Is(err, store.ErrConflict) {
				b.fatalf("CommandHold of a held command = %v, want ErrConflict", err)
			}
			_, err = txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandHold(b.ctx(), b.ids.Next(), "server", until, b.now)
			})
			if !errors.Is(err, store.ErrNotFound) {
				b.fatalf("CommandHold of a missing command = %v, want ErrNotFound", err)
			}
		}},
	}
}
