package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// errRollback fails a transaction on purpose so its work is rolled back.
var errRollback = errors.New("storetest: deliberate rollback")

func (b *bundle) getExecution(id int64) store.Execution {
	b.t.Helper()
	e, err := readDo(b, func(q store.Querier) (store.Execution, error) { return q.ExecutionGet(b.ctx(), id) })
	b.mustNil("ExecutionGet", err)
	return e
}

func executionCases() []testCase {
	return []testCase{
		{"InsertGet", func(b *bundle) {
			want := b.addExecution()
			b.wantExecution("ExecutionGet after insert", b.getExecution(want.ExecutionID), want)
		}},
		{"NilWorkloadStaysNil", func(b *bundle) {
			want := b.newExecution()
			want.Workload = nil
			b.mustWrite("ExecutionInsert", func(tx store.Tx) error { return tx.ExecutionInsert(b.ctx(), want) })
			b.wantExecution("ExecutionGet of an execution without workload", b.getExecution(want.ExecutionID), want)
		}},
		{"Children", func(b *bundle) {
			parent := b.addExecution()
			b.addExecution() // an unrelated top-level execution
			child := func(of int64) store.Execution {
				e := b.newExecution()
				e.ParentExecutionID = of
				return e
			}
			c1, c2 := child(parent.ExecutionID), child(parent.ExecutionID)
			grandchild := child(c1.ExecutionID) // the newest id
			// Reverse id order: listing must sort by execution_id.
			b.mustWrite("ExecutionInsert children", func(tx store.Tx) error {
				for _, e := range []store.Execution{grandchild, c2, c1} {
					if err := tx.ExecutionInsert(b.ctx(), e); err != nil {
						return err
					}
				}
				return nil
			})
			b.wantExecution("ExecutionGet of a child", b.getExecution(c1.ExecutionID), c1)
			children := func(of int64) []store.Execution {
				b.t.Helper()
				list, err := readDo(b, func(q store.Querier) ([]store.Execution, error) { return q.ExecutionChildren(b.ctx(), of) })
				b.mustNil("ExecutionChildren", err)
				return list
			}
			list := children(parent.ExecutionID)
			if len(list) != 2 {
				b.fatalf("ExecutionChildren(parent) returned %d executions, want its 2 direct children", len(list))
			}
			b.wantExecution("ExecutionChildren(parent)[0]", list[0], c1)
			b.wantExecution("ExecutionChildren(parent)[1]", list[1], c2)
			list = children(c1.ExecutionID)
			if len(list) != 1 {
				b.fatalf("ExecutionChildren(child) returned %d executions, want the 1 grandchild", len(list))
			}
			b.wantExecution("ExecutionChildren(child)[0]", list[0], grandchild)
			if list := children(b.ids.Next()); len(list) != 0 {
				b.fatalf("ExecutionChildren of an unknown execution = %d executions, want none", len(list))
			}
			var page []store.Execution
			b.mustRead("ExecutionList", func(q store.Querier) error {
				var err error
				page, _, err = q.ExecutionList(b.ctx(), store.ExecutionFilter{}, 0, 1)
				return err
			})
			if len(page) != 1 {
				b.fatalf("ExecutionList(0, 1) returned %d executions, want 1", len(page))
			}
			b.wantExecution("ExecutionList newest (the grandchild)", page[0], grandchild)
			locked, err := txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), c2.ExecutionID) })
			b.mustNil("LockExecution", err)
			b.wantExecution("LockExecution of a child", locked, c2)
		}},
		{"RevisionIsTheLastTouch", func(b *bundle) {
			e := b.addExecution()
			lock := func() int64 {
				got, err := txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), e.ExecutionID) })
				b.mustNil("LockExecution", err)
				return got.Revision
			}
			if rev := lock(); rev != 0 {
				b.fatalf("Revision of a new execution = %d, want 0", rev)
			}
			b.mustWrite("two ExecutionTouch", func(tx store.Tx) error {
				if _, err := tx.LockExecution(b.ctx(), e.ExecutionID); err != nil {
					return err
				}
				if err := tx.ExecutionTouch(b.ctx(), e.ExecutionID, 41); err != nil {
					return err
				}
				return tx.ExecutionTouch(b.ctx(), e.ExecutionID, 42)
			})
			if rev := lock(); rev != 42 {
				b.fatalf("Revision after touches 41, 42 = %d, want 42", rev)
			}
			// A rolled-back touch leaves no trace.
			err := b.write(func(tx store.Tx) error {
				if err := tx.ExecutionTouch(b.ctx(), e.ExecutionID, 43); err != nil {
					return err
				}
				return errRollback
			})
			b.wantErr("write that rolls back", err, errRollback)
			if rev := lock(); rev != 42 {
				b.fatalf("Revision after a rolled-back touch = %d, want 42", rev)
			}
			// The transaction sees its own touch.
			b.mustWrite("touch then lock", func(tx store.Tx) error {
				if err := tx.ExecutionTouch(b.ctx(), e.ExecutionID, 44); err != nil {
					return err
				}
				got, err := tx.LockExecution(b.ctx(), e.ExecutionID)
				if err == nil && got.Revision != 44 {
					b.errorf("LockExecution after a touch in the same transaction: Revision %d, want 44", got.Revision)
				}
				return err
			})
		}},
		{"ContextNilUntilSet", func(b *bundle) {
			want := b.addExecution()
			if got := b.getExecution(want.ExecutionID); got.Context != nil {
				b.fatalf("Context of a new execution = %q, want nil", got.Context)
			}
		}},
		{"SetContext", func(b *bundle) {
			want := b.addExecution()
			other := b.addExecution()
			b.mustWrite("ExecutionSetContext", func(tx store.Tx) error {
				return tx.ExecutionSetContext(b.ctx(), want.ExecutionID, jsonContext)
			})
			want.Context = jsonContext
			b.wantExecution("ExecutionGet after ExecutionSetContext", b.getExecution(want.ExecutionID), want)
			b.wantExecution("an execution whose context was not set", b.getExecution(other.ExecutionID), other)

			// Every read of an execution carries its context.
			locked, err := txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), want.ExecutionID) })
			b.mustNil("LockExecution", err)
			b.wantExecution("LockExecution after ExecutionSetContext", locked, want)
			var page []store.Execution
			b.mustRead("ExecutionList", func(q store.Querier) error {
				var err error
				page, _, err = q.ExecutionList(b.ctx(), store.ExecutionFilter{}, 1, 1)
				return err
			})
			if len(page) != 1 {
				b.fatalf("ExecutionList(1, 1) returned %d executions, want 1", len(page))
			}
			b.wantExecution("ExecutionList after ExecutionSetContext", page[0], want)
			child := b.newExecution()
			child.ParentExecutionID = want.ExecutionID
			b.mustWrite("ExecutionInsert child", func(tx store.Tx) error {
				if err := tx.ExecutionInsert(b.ctx(), child); err != nil {
					return err
				}
				return tx.ExecutionSetContext(b.ctx(), child.ExecutionID, jsonContext2)
			})
			child.Context = jsonContext2
			kids, err := readDo(b, func(q store.Querier) ([]store.Execution, error) {
				return q.ExecutionChildren(b.ctx(), want.ExecutionID)
			})
			b.mustNil("ExecutionChildren", err)
			if len(kids) != 1 {
				b.fatalf("ExecutionChildren returned %d executions, want 1", len(kids))
			}
			b.wantExecution("ExecutionChildren after ExecutionSetContext", kids[0], child)

			// A second set replaces the document; finishing keeps it.
			b.mustWrite("ExecutionSetContext again", func(tx store.Tx) error {
				return tx.ExecutionSetContext(b.ctx(), want.ExecutionID, jsonContext2)
			})
			end := b.now.Add(time.Minute)
			b.mustWrite("ExecutionFinish", func(tx store.Tx) error {
				return tx.ExecutionFinish(b.ctx(), want.ExecutionID, api.ExecCompleted, jsonResult, "", end)
			})
			want.Context, want.Status, want.Result, want.EndedAt = jsonContext2, api.ExecCompleted, jsonResult, &end
			b.wantExecution("ExecutionGet after a second set and ExecutionFinish", b.getExecution(want.ExecutionID), want)

			// Setting a nil context stores NULL again.
			b.mustWrite("ExecutionSetContext nil", func(tx store.Tx) error {
				return tx.ExecutionSetContext(b.ctx(), want.ExecutionID, nil)
			})
			want.Context = nil
			b.wantExecution("ExecutionGet after ExecutionSetContext(nil)", b.getExecution(want.ExecutionID), want)
		}},
		{"SetContextRolledBack", func(b *bundle) {
			want := b.addExecution()
			err := b.write(func(tx store.Tx) error {
				if err := tx.ExecutionSetContext(b.ctx(), want.ExecutionID, jsonContext); err != nil {
					return err
				}
				return errRollback
			})
			b.wantErr("transaction that set a context and failed", err, errRollback)
			b.wantExecution("ExecutionGet after a rolled-back ExecutionSetContext", b.getExecution(want.ExecutionID), want)
		}},
		{"SetContextMissing", func(b *bundle) {
			err := b.write(func(tx store.Tx) error {
				return tx.ExecutionSetContext(b.ctx(), b.ids.Next(), jsonContext)
			})
			b.wantErr("ExecutionSetContext of an unknown id", err, store.ErrNotFound)
		}},
		{"GetMissing", func(b *bundle) {
			_, err := readDo(b, func(q store.Querier) (store.Execution, error) { return q.ExecutionGet(b.ctx(), b.ids.Next()) })
			b.wantErr("ExecutionGet of an unknown id", err, store.ErrNotFound)
		}},
		{"ListPagesNewestFirst", func(b *bundle) {
			var all []store.Execution
			for range 5 {
				all = append(all, b.newExecution())
			}
			// Insert out of id order: the list must order by id, not by
			// insertion.
			b.mustWrite("ExecutionInsert x5", func(tx store.Tx) error {
				for _, i := range []int{2, 0, 4, 1, 3} {
					if err := tx.ExecutionInsert(b.ctx(), all[i]); err != nil {
						return err
					}
				}
				return nil
			})
			id := func(i int) int64 { return all[i].ExecutionID }
			for _, page := range []struct {
				offset, limit int
				want          []int64
			}{
				{0, 2, []int64{id(4), id(3)}},
				{2, 2, []int64{id(2), id(1)}},
				{4, 2, []int64{id(0)}},
				{5, 2, []int64{}},
				{0, 10, []int64{id(4), id(3), id(2), id(1), id(0)}},
			} {
				var list []store.Execution
				var total int64
				b.mustRead("ExecutionList", func(q store.Querier) error {
					var err error
					list, total, err = q.ExecutionList(b.ctx(), store.ExecutionFilter{}, page.offset, page.limit)
					return err
				})
				what := fmt.Sprintf("ExecutionList(offset %d, limit %d)", page.offset, page.limit)
				got := []int64{}
				for _, e := range list {
					got = append(got, e.ExecutionID)
				}
				b.wantIDs(what, got, page.want)
				if total != 5 {
					b.fatalf("%s total = %d, want 5", what, total)
				}
				if len(list) > 0 {
					b.wantExecution(what+" first row", list[0], all[indexOf(all, list[0].ExecutionID)])
				}
			}
		}},
		{"ListFiltered", func(b *bundle) {
			// Path and status of each execution, inserted in id order.
			rows := []struct {
				path   string
				status api.ExecStatus
			}{
				{"etl/a", api.ExecRunning},
				{"etl/a", api.ExecCompleted},
				{"etl/b", api.ExecFailed},
				{"etl/a", api.ExecFailed},
				{"ETL/a", api.ExecFailed}, // another path: case counts
				{"etl%/x", api.ExecCancelled},
				{"etlx", api.ExecFailed},
				{"other", api.ExecRunning},
			}
			var ids []int64
			var execs []store.Execution
			for _, r := range rows {
				e := b.newExecution()
				e.Path, e.Status = r.path, r.status
				if r.status.Terminal() {
					end := b.now
					e.EndedAt = &end
				}
				ids = append(ids, e.ExecutionID)
				execs = append(execs, e)
			}
			b.mustWrite("ExecutionInsert", func(tx store.Tx) error {
				for _, e := range execs {
					if err := tx.ExecutionInsert(b.ctx(), e); err != nil {
						return err
					}
				}
				return nil
			})
			for _, tc := range []struct {
				f    store.ExecutionFilter
				want []int // indexes into rows, newest first
			}{
				{store.ExecutionFilter{}, []int{7, 6, 5, 4, 3, 2, 1, 0}},
				{store.ExecutionFilter{Status: api.ExecFailed}, []int{6, 4, 3, 2}},
				{store.ExecutionFilter{Path: "etl/a"}, []int{3, 1, 0}},
				{store.ExecutionFilter{Path: "etl/a", Status: api.ExecFailed}, []int{3}},
				{store.ExecutionFilter{Path: "etl/", PathPrefix: true}, []int{3, 2, 1, 0}},
				{store.ExecutionFilter{Path: "etl%", PathPrefix: true}, []int{5}},
				{store.ExecutionFilter{Path: "etl", PathPrefix: true, Status: api.ExecFailed}, []int{6, 3, 2}},
				{store.ExecutionFilter{Path: "", PathPrefix: true}, []int{7, 6, 5, 4, 3, 2, 1, 0}},
				{store.ExecutionFilter{Path: "etl/"}, nil},
				{store.ExecutionFilter{Status: api.ExecCancelled, Path: "other"}, nil},
			} {
				want := []int64{}
				for _, i := range tc.want {
					want = append(want, ids[i])
				}
				// A page of 2 from offset 1 and the whole list; the total
				// counts every match either way.
				for _, page := range [][2]int{{0, 100}, {1, 2}} {
					var list []store.Execution
					var total int64
					b.mustRead("ExecutionList", func(q store.Querier) error {
						var err error
						list, total, err = q.ExecutionList(b.ctx(), tc.f, page[0], page[1])
						return err
					})
					what := fmt.Sprintf("ExecutionList(%+v, offset %d, limit %d)", tc.f, page[0], page[1])
					got := []int64{}
					for _, e := range list {
						got = append(got, e.ExecutionID)
					}
					w := want[min(page[0], len(want)):min(page[0]+page[1], len(want))]
					b.wantIDs(what, got, w)
					if total != int64(len(want)) {
						b.fatalf("%s total = %d, want %d", what, total, len(want))
					}
				}
			}
		}},
		{"ListEmpty", func(b *bundle) {
			b.mustRead("ExecutionList", func(q store.Querier) error {
				list, total, err := q.ExecutionList(b.ctx(), store.ExecutionFilter{}, 0, 10)
				b.mustNil("ExecutionList", err)
				if len(list) != 0 || total != 0 {
					b.fatalf("ExecutionList on an empty store = %d rows, total %d; want none", len(list), total)
				}
				return nil
			})
		}},
		{"FinishFromRunning", func(b *bundle) {
			for _, tc := range []struct {
				status api.ExecStatus
				result json.RawMessage
				errMsg string
			}{
				{api.ExecCompleted, jsonResult, ""},
				{api.ExecFailed, nil, "step build exited 2"},
				{api.ExecCancelled, nil, ""},
			} {
				want := b.addExecution()
				end := b.now.Add(time.Minute)
				b.mustWrite("ExecutionFinish "+string(tc.status), func(tx store.Tx) error {
					return tx.ExecutionFinish(b.ctx(), want.ExecutionID, tc.status, tc.result, tc.errMsg, end)
				})
				want.Status, want.EndedAt, want.Result, want.Error = tc.status, &end, tc.result, tc.errMsg
				b.wantExecution("execution after ExecutionFinish "+string(tc.status), b.getExecution(want.ExecutionID), want)
			}
		}},
		{"FinishOnlyFromRunning", func(b *bundle) {
			want := b.addExecution()
			b.finishExecution(want.ExecutionID, api.ExecCompleted)
			err := b.write(func(tx store.Tx) error {
				return tx.ExecutionFinish(b.ctx(), want.ExecutionID, api.ExecFailed, nil, "late", b.now.Add(time.Hour))
			})
			b.wantErr("ExecutionFinish of an already completed execution", err, store.ErrConflict)
			if got := b.getExecution(want.ExecutionID); got.Status != api.ExecCompleted || got.Error != "" {
				b.fatalf("a rejected ExecutionFinish changed the execution: status %q error %q", got.Status, got.Error)
			}
		}},
		{"FinishMissing", func(b *bundle) {
			err := b.write(func(tx store.Tx) error {
				return tx.ExecutionFinish(b.ctx(), b.ids.Next(), api.ExecCompleted, nil, "", b.now)
			})
			b.wantErr("ExecutionFinish of an unknown id", err, store.ErrNotFound)
		}},
		{"Lock", func(b *bundle) {
			want := b.addExecution()
			got, err := txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), want.ExecutionID) })
			b.mustNil("LockExecution", err)
			b.wantExecution("LockExecution result", got, want)
			_, err = txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), b.ids.Next()) })
			b.wantErr("LockExecution of an unknown id", err, store.ErrNotFound)
		}},
		{"LockSerialisesWriters", func(b *bundle) {
			e := b.addExecution()
			tx1, err := b.drv.Begin(b.ctx())
			b.mustNil("Begin tx1", err)
			defer func() { _ = tx1.Rollback(b.ctx()) }()
			_, err = tx1.LockExecution(b.ctx(), e.ExecutionID)
			b.mustNil("LockExecution in tx1", err)

			type seen struct {
				status api.ExecStatus
				err    error
			}
			ready := make(chan struct{})
			out := make(chan seen, 1)
			go func() {
				close(ready)
				got, err := txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), e.ExecutionID) })
				out <- seen{got.Status, err}
			}()
			<-ready
			// Not synchronisation: a correct driver passes however long
			// this is; the pause only lets a broken lock be observed.
			time.Sleep(lockHold)
			b.mustNil("ExecutionFinish in tx1", tx1.ExecutionFinish(b.ctx(), e.ExecutionID, api.ExecCompleted, nil, "", b.now))
			b.mustNil("Commit tx1", tx1.Commit(b.ctx()))
			r := <-out
			b.mustNil("LockExecution in tx2", r.err)
			if r.status != api.ExecCompleted {
				b.fatalf("tx2 locked the execution while tx1 held it: it saw status %q, want %q written by tx1", r.status, api.ExecCompleted)
			}
		}},
	}
}

func indexOf(all []store.Execution, id int64) int {
	for i, e := range all {
		if e.ExecutionID == id {
			return i
		}
	}
	return -1
}

func eventCases() []testCase {
	return []testCase{
		{"ListOrderAndRoundTrip", func(b *bundle) {
			e := b.addExecution()
			other := b.addExecution()
			mk := func(exec int64, typ string) store.Event {
				return store.Event{EventID: b.ids.Next(), ExecutionID: exec, EventType: typ, CreatedAt: b.now}
			}
			started := mk(e.ExecutionID, api.EvPlaybookStarted)
			issuedEv := mk(e.ExecutionID, api.EvCommandIssued)
			issuedEv.Step, issuedEv.CommandID = "build", fmt.Sprintf("%d:build:%d", e.ExecutionID, issuedEv.EventID)
			done := mk(e.ExecutionID, api.EvCommandCompleted)
			done.Step, done.CommandID, done.Status = "build", issuedEv.CommandID, string(api.CmdCompleted)
			done.Result, done.Error, done.WorkerID, done.Attempt = jsonResult, "warning: slow", "worker-1", 3
			done.CreatedAt = b.now.Add(time.Second)
			foreign := mk(other.ExecutionID, api.EvPlaybookStarted)
			b.mustWrite("EventInsert", func(tx store.Tx) error {
				// Reverse id order: listing must sort by event_id.
				for _, ev := range []store.Event{done, foreign, issuedEv, started} {
					if err := tx.EventInsert(b.ctx(), ev); err != nil {
						return err
					}
				}
				return nil
			})
			list, err := readDo(b, func(q store.Querier) ([]store.Event, error) { return q.EventList(b.ctx(), e.ExecutionID) })
			b.mustNil("EventList", err)
			want := []store.Event{started, issuedEv, done}
			if len(list) != len(want) {
				b.fatalf("EventList returned %d events, want %d of this execution only", len(list), len(want))
			}
			for i := range want {
				b.wantEvent(fmt.Sprintf("EventList[%d]", i), list[i], want[i])
			}
			list, err = readDo(b, func(q store.Querier) ([]store.Event, error) {
				return q.EventListOfType(b.ctx(), e.ExecutionID, issuedEv.EventType)
			})
			b.mustNil("EventListOfType", err)
			if len(list) != 1 {
				b.fatalf("EventListOfType(%s) returned %d events, want 1", issuedEv.EventType, len(list))
			}
			b.wantEvent("EventListOfType[0]", list[0], issuedEv)
		}},
		{"After", func(b *bundle) {
			e := b.addExecution()
			other := b.addExecution()
			var mine, all, ends []store.Event
			b.mustWrite("EventInsert", func(tx store.Tx) error {
				for i := 0; i < 6; i++ {
					exec, typ := e.ExecutionID, api.EvCommandIssued
					if i%2 == 1 {
						exec = other.ExecutionID
					}
					if i >= 4 {
						typ = api.EvPlaybookCompleted
					}
					ev := store.Event{EventID: b.ids.Next(), ExecutionID: exec, EventType: typ, CreatedAt: b.now}
					if err := tx.EventInsert(b.ctx(), ev); err != nil {
						return err
					}
					all = append(all, ev)
					if exec == e.ExecutionID {
						mine = append(mine, ev)
					}
					if typ == api.EvPlaybookCompleted {
						ends = append(ends, ev)
					}
				}
				return nil
			})
			after := func(exec, afterID int64, types []string, limit int) []store.Event {
				list, err := readDo(b, func(q store.Querier) ([]store.Event, error) {
					return q.EventsAfter(b.ctx(), exec, afterID, types, limit)
				})
				b.mustNil("EventsAfter", err)
				return list
			}
			check := func(what string, got, want []store.Event) {
				if len(got) != len(want) {
					b.fatalf("%s returned %d events, want %d", what, len(got), len(want))
				}
				for i := range want {
					b.wantEvent(fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
				}
			}
			check("EventsAfter(all, 0)", after(0, 0, nil, 100), all)
			check("EventsAfter(all, 2nd, limit 2)", after(0, all[1].EventID, nil, 2), all[2:4])
			check("EventsAfter(execution, 1st)", after(e.ExecutionID, mine[0].EventID, nil, 100), mine[1:])
			check("EventsAfter(all, ends)", after(0, 0, []string{api.EvPlaybookCompleted, api.EvPlaybookFailed}, 100), ends)
			check("EventsAfter(execution, ends)", after(e.ExecutionID, 0, []string{api.EvPlaybookCompleted}, 100), ends[:1])
			check("EventsAfter(all, after the last)", after(0, all[5].EventID, nil, 100), nil)
		}},
		{"ListEmpty", func(b *bundle) {
			e := b.addExecution()
			list, err := readDo(b, func(q store.Querier) ([]store.Event, error) { return q.EventList(b.ctx(), e.ExecutionID) })
			b.mustNil("EventList", err)
			if len(list) != 0 {
				b.fatalf("EventList of an execution without events = %+v, want none", list)
			}
		}},
	}
}
