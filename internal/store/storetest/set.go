package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// setChunk is more rows than one set statement of any driver carries, so
// the set is split (SQLite: 128 rows a statement).
const setChunk = 300

// setRows builds one of each kind of row with every field the inserts
// write, some defaulted (zero Status, AvailableAt, nil Payload) and some
// set. Ids come from next; the events, commands and outbox rows belong to
// execID (no foreign keys, so execID need not be one of the executions).
func (b *bundle) setRows(execID int64, cat store.CatalogEntry, next func() int64) store.Writes {
	later := b.now.Add(time.Minute)
	ended := b.now.Add(2 * time.Second)
	cmd1, cmd2 := next(), next()
	return store.Writes{
		Executions: []store.Execution{
			{ExecutionID: next(), CatalogID: cat.CatalogID, Path: cat.Path, Version: cat.Version, Status: api.ExecRunning,
				Workload: jsonWorkload, StartedAt: b.now},
			{ExecutionID: next(), CatalogID: cat.CatalogID, Path: cat.Path, Version: cat.Version, // Status "" is running
				Workload: jsonWorkload, StartedAt: b.now, Context: jsonContext, ParentExecutionID: execID},
			{ExecutionID: next(), CatalogID: cat.CatalogID, Path: cat.Path, Version: cat.Version, Status: api.ExecFailed,
				StartedAt: b.now, EndedAt: &ended, Result: jsonResult, Error: "it broke"},
		},
		Events: []store.Event{
			{EventID: next(), ExecutionID: execID, EventType: api.EvCommandIssued, Step: "a", CommandID: "c:a", Status: "issued", CreatedAt: b.now},
			{EventID: next(), ExecutionID: execID, EventType: api.EvCommandCompleted, Step: "a", CommandID: "c:a", Status: "completed",
				Result: jsonResult, WorkerID: "w1", Attempt: 2, CreatedAt: later},
			{EventID: next(), ExecutionID: execID, EventType: api.EvCommandFailed, Step: "b", Error: "café \u2603 'quoted'", CreatedAt: later},
		},
		Commands: []store.Command{
			{EventID: cmd1, ExecutionID: execID, CommandID: "c:a", Step: "a", Tool: jsonTool, Input: jsonInput, CreatedAt: b.now,
				Status: api.CmdCompleted, Attempt: 7, WorkerID: "ignored"}, // an insert ignores the caller's state
			{EventID: cmd2, ExecutionID: execID, CommandID: "c:b", Step: "b", Tool: jsonTool, CreatedAt: b.now, AvailableAt: later,
				LoopID: 42, LoopIndex: 3, Retry: 2, Pool: "gpu"},
		},
		Outbox: []store.OutboxMsg{
			{ID: next(), EventID: cmd1, Subject: "s.default", MsgID: "m1", Payload: []byte(`{"x":1}`), CreatedAt: b.now, TraceParent: "00-abc-def-01"},
			{ID: next(), EventID: cmd2, Subject: "s.gpu", MsgID: "m2", CreatedAt: b.now, AvailableAt: later}, // nil payload
		},
	}
}

// rowByRow writes w with the single-row methods.
func rowByRow(ctx context.Context, tx store.Tx, w *store.Writes) error {
	var errs []error
	for _, e := range w.Executions {
		errs = append(errs, tx.ExecutionInsert(ctx, e))
	}
	for _, c := range w.Commands {
		errs = append(errs, tx.CommandInsert(ctx, c))
	}
	for _, e := range w.Events {
		errs = append(errs, tx.EventInsert(ctx, e))
	}
	for _, m := range w.Outbox {
		errs = append(errs, tx.OutboxInsert(ctx, m))
	}
	for _, tc := range w.Touches {
		errs = append(errs, tx.ExecutionTouch(ctx, tc.ExecutionID, tc.Revision))
	}
	return errors.Join(errs...)
}

// stored reads back every row of w, by kind, in w's order.
func (b *bundle) stored(w store.Writes) store.Writes {
	b.t.Helper()
	var got store.Writes
	b.mustWrite("read back", func(tx store.Tx) error {
		for _, e := range w.Executions {
			x, err := tx.LockExecution(b.ctx(), e.ExecutionID)
			if err != nil {
				return fmt.Errorf("execution %d: %w", e.ExecutionID, err)
			}
			got.Executions = append(got.Executions, x)
		}
		for _, c := range w.Commands {
			x, err := tx.CommandGet(b.ctx(), c.EventID)
			if err != nil {
				return fmt.Errorf("command %d: %w", c.EventID, err)
			}
			got.Commands = append(got.Commands, x)
		}
		events := map[int64]store.Event{}
		for _, e := range w.Events {
			if _, ok := events[e.EventID]; ok {
				continue
			}
			all, err := tx.EventList(b.ctx(), e.ExecutionID)
			if err != nil {
				return err
			}
			for _, x := range all {
				events[x.EventID] = x
			}
		}
		for _, e := range w.Events {
			got.Events = append(got.Events, events[e.EventID])
		}
		msgs, err := tx.OutboxFetch(b.ctx(), b.now.Add(time.Hour), 100000)
		if err != nil {
			return err
		}
		byID := map[int64]store.OutboxMsg{}
		for _, m := range msgs {
			byID[m.ID] = m
		}
		for _, m := range w.Outbox {
			got.Outbox = append(got.Outbox, byID[m.ID])
		}
		return nil
	})
	return got
}

// renumber is w with fresh ids (and the commands' outbox rows following
// their commands), everything else equal.
func renumber(w store.Writes, next func() int64) store.Writes {
	out := store.Writes{
		Executions: append([]store.Execution(nil), w.Executions...),
		Events:     append([]store.Event(nil), w.Events...),
		Commands:   append([]store.Command(nil), w.Commands...),
		Outbox:     append([]store.OutboxMsg(nil), w.Outbox...),
	}
	cmds := map[int64]int64{}
	for i := range out.Executions {
		out.Executions[i].ExecutionID = next()
	}
	for i := range out.Events {
		out.Events[i].EventID = next()
	}
	for i := range out.Commands {
		id := next()
		cmds[out.Commands[i].EventID] = id
		out.Commands[i].EventID = id
	}
	for i := range out.Outbox {
		out.Outbox[i].ID = next()
		out.Outbox[i].EventID = cmds[out.Outbox[i].EventID]
	}
	return out
}

func setCases() []testCase {
	return []testCase{
		{"SameRowsAsRowByRow", func(b *bundle) {
			// The same rows written one by one and as a set read back
			// identical, ids aside: same defaults, times, JSON bytes.
			exec := b.addExecution()
			cat := b.addCatalog(fmt.Sprintf("flows/%d", b.ids.Next()), "steps: []")
			one := b.setRows(exec.ExecutionID, cat, b.ids.Next)
			set := renumber(one, b.ids.Next)
			b.mustWrite("row by row", func(tx store.Tx) error { return rowByRow(b.ctx(), tx, &one) })
			b.mustWrite("WriteSet", func(tx store.Tx) error { return tx.WriteSet(b.ctx(), &set) })
			want, got := b.stored(one), b.stored(set)
			for i := range want.Executions {
				g := got.Executions[i]
				g.ExecutionID = want.Executions[i].ExecutionID
				b.wantExecution(fmt.Sprintf("execution %d", i), g, want.Executions[i])
				if g.Revision != want.Executions[i].Revision {
					b.errorf("execution %d: revision %d, row by row %d", i, g.Revision, want.Executions[i].Revision)
				}
			}
			for i := range want.Events {
				g := got.Events[i]
				g.EventID = want.Events[i].EventID
				b.wantEvent(fmt.Sprintf("event %d", i), g, want.Events[i])
			}
			for i := range want.Commands {
				g := got.Commands[i]
				g.EventID = want.Commands[i].EventID
				b.wantCommand(fmt.Sprintf("command %d", i), g, want.Commands[i])
			}
			for i := range want.Outbox {
				g := got.Outbox[i]
				g.ID, g.EventID = want.Outbox[i].ID, want.Outbox[i].EventID
				b.wantOutbox(fmt.Sprintf("outbox %d", i), g, want.Outbox[i])
			}
		}},
		{"TouchesSetRevisionsLastWins", func(b *bundle) {
			e1, e2 := b.addExecution(), b.addExecution()
			b.mustWrite("WriteSet touches", func(tx store.Tx) error {
				return tx.WriteSet(b.ctx(), &store.Writes{Touches: []store.Touch{
					{ExecutionID: e1.ExecutionID, Revision: 5}, {ExecutionID: e2.ExecutionID, Revision: 6},
					{ExecutionID: e1.ExecutionID, Revision: 7},
				}})
			})
			got := b.stored(store.Writes{Executions: []store.Execution{e1, e2}})
			if got.Executions[0].Revision != 7 || got.Executions[1].Revision != 6 {
				b.fatalf("revisions %d, %d; want 7 (the last touch), 6", got.Executions[0].Revision, got.Executions[1].Revision)
			}
		}},
		{"TouchOfExecutionInSameSet", func(b *bundle) {
			// Executions go in before touches, whatever the call order.
			e := b.newExecution()
			b.mustWrite("WriteSet", func(tx store.Tx) error {
				return tx.WriteSet(b.ctx(), &store.Writes{Touches: []store.Touch{{ExecutionID: e.ExecutionID, Revision: 9}},
					Executions: []store.Execution{e}})
			})
			if got := b.stored(store.Writes{Executions: []store.Execution{e}}); got.Executions[0].Revision != 9 {
				b.fatalf("revision %d, want 9", got.Executions[0].Revision)
			}
		}},
		{"EmptySetIsNoOp", func(b *bundle) {
			e := b.addExecution()
			b.mustWrite("empty WriteSet", func(tx store.Tx) error {
				if err := tx.WriteSet(b.ctx(), &store.Writes{}); err != nil {
					return err
				}
				// The transaction still works afterwards.
				_, err := tx.LockExecution(b.ctx(), e.ExecutionID)
				return err
			})
		}},
		{"DuplicateKeyIsConflict", func(b *bundle) {
			exec := b.addExecution()
			cat := b.addCatalog(fmt.Sprintf("flows/%d", b.ids.Next()), "steps: []")
			old := b.setRows(exec.ExecutionID, cat, b.ids.Next)
			b.mustWrite("first set", func(tx store.Tx) error { return tx.WriteSet(b.ctx(), &old) })
			// Each kind: a set of a fresh row and a stored one fails as a
			// whole with ErrConflict; the fresh row is not stored.
			kinds := map[string]func(fresh store.Writes) store.Writes{
				"executions": func(f store.Writes) store.Writes {
					return store.Writes{Executions: []store.Execution{f.Executions[0], old.Executions[1]}}
				},
				"events": func(f store.Writes) store.Writes {
					return store.Writes{Events: []store.Event{f.Events[0], old.Events[2]}}
				},
				"commands": func(f store.Writes) store.Writes {
					return store.Writes{Commands: []store.Command{f.Commands[0], old.Commands[1]}}
				},
				"outbox": func(f store.Writes) store.Writes {
					return store.Writes{Outbox: []store.OutboxMsg{f.Outbox[0], old.Outbox[1]}}
				},
				"within one set": func(f store.Writes) store.Writes {
					return store.Writes{Events: []store.Event{f.Events[0], f.Events[1], f.Events[0]}}
				},
			}
			for kind, mk := range kinds {
				fresh := renumber(old, b.ids.Next)
				w := mk(fresh)
				err := b.write(func(tx store.Tx) error { return tx.WriteSet(b.ctx(), &w) })
				b.wantErr("duplicate "+kind, err, store.ErrConflict)
				n := 0
				b.mustRead("count", func(q store.Querier) error {
					if _, err := q.ExecutionGet(b.ctx(), fresh.Executions[0].ExecutionID); err == nil {
						n++
					}
					if _, err := q.CommandGet(b.ctx(), fresh.Commands[0].EventID); err == nil {
						n++
					}
					evs, err := q.EventList(b.ctx(), exec.ExecutionID)
					for _, e := range evs {
						if e.EventID == fresh.Events[0].EventID {
							n++
						}
					}
					return err
				})
				if n != 0 {
					b.fatalf("duplicate %s: %d rows of the failed set were stored", kind, n)
				}
			}
		}},
		{"FailedSetUndoneBySavepoint", func(b *bundle) {
			// A failing set inside a savepoint: RollbackTo undoes it and the
			// transaction goes on; rows before and after commit.
			exec := b.addExecution()
			dup := b.newEvent(exec.ExecutionID)
			b.mustWrite("stored event", func(tx store.Tx) error { return tx.EventInsert(b.ctx(), dup) })
			before, after := b.newEvent(exec.ExecutionID), b.newEvent(exec.ExecutionID)
			b.mustWrite("savepoint", func(tx store.Tx) error {
				ctx := b.ctx()
				if err := tx.WriteSet(ctx, &store.Writes{Events: []store.Event{before}}); err != nil {
					return err
				}
				if err := tx.Savepoint(ctx, store.CallerSavepoint); err != nil {
					return err
				}
				bad := store.Writes{Events: []store.Event{b.newEvent(exec.ExecutionID), dup}}
				err := tx.WriteSet(ctx, &bad)
				if err == nil {
					err = tx.Release(ctx, store.CallerSavepoint) // a queued set fails here at the latest
				}
				if !errors.Is(err, store.ErrConflict) {
					return fmt.Errorf("set with a stored event id: %v, want ErrConflict", err)
				}
				if err := tx.RollbackTo(ctx, store.CallerSavepoint); err != nil {
					return err
				}
				if err := tx.Release(ctx, store.CallerSavepoint); err != nil {
					return err
				}
				return tx.WriteSet(ctx, &store.Writes{Events: []store.Event{after}})
			})
			evs, err := readDo(b, func(q store.Querier) ([]store.Event, error) { return q.EventList(b.ctx(), exec.ExecutionID) })
			b.mustNil("EventList", err)
			var ids []int64
			for _, e := range evs {
				ids = append(ids, e.EventID)
			}
			b.wantIDs("events", ids, []int64{dup.EventID, before.EventID, after.EventID})
		}},
		{"LargerThanOneStatement", func(b *bundle) {
			exec := b.addExecution()
			cat := b.addCatalog(fmt.Sprintf("flows/%d", b.ids.Next()), "steps: []")
			var w store.Writes
			for i := 0; i < setChunk; i++ {
				r := b.setRows(exec.ExecutionID, cat, b.ids.Next)
				w.Executions = append(w.Executions, r.Executions[i%3])
				w.Events = append(w.Events, r.Events[i%3])
				w.Commands = append(w.Commands, r.Commands[i%2])
				w.Outbox = append(w.Outbox, r.Outbox[i%2])
			}
			for i, e := range w.Executions {
				w.Touches = append(w.Touches, store.Touch{ExecutionID: e.ExecutionID, Revision: int64(1000 + i)})
			}
			b.mustWrite("WriteSet", func(tx store.Tx) error { return tx.WriteSet(b.ctx(), &w) })
			got := b.stored(w)
			for i, e := range got.Executions {
				if e.ExecutionID != w.Executions[i].ExecutionID || e.Revision != int64(1000+i) {
					b.fatalf("execution %d: id %d revision %d, want %d, %d", i, e.ExecutionID, e.Revision, w.Executions[i].ExecutionID, 1000+i)
				}
			}
			for i := range w.Events {
				if got.Events[i].EventID != w.Events[i].EventID {
					b.fatalf("event %d of %d missing", i, setChunk)
				}
			}
			for i := range w.Commands {
				if got.Commands[i].EventID != w.Commands[i].EventID {
					b.fatalf("command %d of %d missing", i, setChunk)
				}
			}
			for i := range w.Outbox {
				if got.Outbox[i].ID != w.Outbox[i].ID {
					b.fatalf("outbox row %d of %d missing", i, setChunk)
				}
			}
		}},
	}
}

// newEvent is an unsaved event of execID.
func (b *bundle) newEvent(execID int64) store.Event {
	return store.Event{EventID: b.ids.Next(), ExecutionID: execID, EventType: api.EvCommandIssued, Step: "s", CreatedAt: b.now}
}

// groupCommitCases run the group commit (store.Store) on the driver: each
// caller's answer must be its own, whatever batch it shared.
func groupCommitCases() []testCase {
	return []testCase{
		{"MixedClaimsAndConflicts", func(b *bundle) {
			// Callers race to claim a few commands, each recording a
			// claimed event: exactly one claim per command wins, the
			// others get ErrConflict, and only the winners' events commit.
			st := b.store()
			exec := b.addExecution()
			const commands, racers = 4, 24
			var cmds []store.Command
			for i := 0; i < commands; i++ {
				cmds = append(cmds, b.addCommand(exec.ExecutionID, b.now))
			}
			var mu sync.Mutex
			won := map[int64]int{}
			var wonEvents []int64
			concurrently(racers, func(i int) {
				c := cmds[i%commands]
				ev := b.ids.Next()
				err := st.Do(b.ctx(), exec.ExecutionID, func(ctx context.Context, tx store.Tx) error {
					got, err := tx.CommandClaim(ctx, store.ClaimParams{EventID: c.EventID, WorkerID: fmt.Sprint("w", i), Now: b.now, LeaseTTL: leaseTTL})
					if err != nil {
						return err
					}
					return tx.EventInsert(ctx, store.Event{EventID: ev, ExecutionID: exec.ExecutionID, EventType: api.EvCommandClaimed,
						CommandID: got.CommandID, WorkerID: got.WorkerID, Attempt: got.Attempt, CreatedAt: b.now})
				})
				switch {
				case err == nil:
					mu.Lock()
					won[c.EventID]++
					wonEvents = append(wonEvents, ev)
					mu.Unlock()
				case !errors.Is(err, store.ErrConflict):
					b.errorf("caller %d: %v, want nil or ErrConflict", i, err)
				}
			})
			for _, c := range cmds {
				if won[c.EventID] != 1 {
					b.errorf("command %d claimed %d times, want once", c.EventID, won[c.EventID])
				}
			}
			evs, err := readDo(b, func(q store.Querier) ([]store.Event, error) { return q.EventList(b.ctx(), exec.ExecutionID) })
			b.mustNil("EventList", err)
			var got []int64
			for _, e := range evs {
				got = append(got, e.EventID)
			}
			b.wantIDs("claimed events", got, sortedIDs(wonEvents))
		}},
		{"PoisonedRowFailsOnlyItsCaller", func(b *bundle) {
			// Every caller inserts an execution, a command, its outbox row
			// and events; every fifth also an event whose id is taken. Only
			// those callers fail (ErrConflict); the others' rows all commit.
			st := b.store()
			exec := b.addExecution()
			taken := b.newEvent(exec.ExecutionID)
			b.mustWrite("taken event", func(tx store.Tx) error { return tx.EventInsert(b.ctx(), taken) })
			cat := b.addCatalog(fmt.Sprintf("flows/%d", b.ids.Next()), "steps: []")
			const callers = 60
			rows := make([]store.Writes, callers)
			errs := make([]error, callers)
			concurrently(callers, func(i int) {
				w := b.setRows(exec.ExecutionID, cat, b.ids.Next)
				w.Events = append(w.Events, b.newEvent(exec.ExecutionID))
				if i%5 == 0 {
					w.Events = append(w.Events, taken)
				}
				rows[i] = w
				errs[i] = st.Do(b.ctx(), 1, func(ctx context.Context, tx store.Tx) error {
					if err := rowByRow(ctx, tx, &w); err != nil {
						return err
					}
					// A read of a row just written sees it.
					_, err := tx.LockExecution(ctx, w.Executions[0].ExecutionID)
					return err
				})
			})
			var want []int64
			for i, err := range errs {
				if i%5 == 0 {
					b.wantErr(fmt.Sprintf("poisoned caller %d", i), err, store.ErrConflict)
					continue
				}
				b.mustNil(fmt.Sprintf("caller %d", i), err)
				for _, e := range rows[i].Events {
					want = append(want, e.EventID)
				}
			}
			want = sortedIDs(append(want, taken.EventID))
			evs, err := readDo(b, func(q store.Querier) ([]store.Event, error) { return q.EventList(b.ctx(), exec.ExecutionID) })
			b.mustNil("EventList", err)
			var got []int64
			for _, e := range evs {
				got = append(got, e.EventID)
			}
			b.wantIDs("events", got, want)
			for i, w := range rows {
				_, err := readDo(b, func(q store.Querier) (store.Command, error) { return q.CommandGet(b.ctx(), w.Commands[1].EventID) })
				if i%5 == 0 {
					b.wantErr(fmt.Sprintf("command of poisoned caller %d", i), err, store.ErrNotFound)
				} else {
					b.mustNil(fmt.Sprintf("command of caller %d", i), err)
				}
			}
		}},
	}
}

// store is a group commit on b's driver; closing it leaves the driver to
// the test's own cleanup.
func (b *bundle) store() *store.Store {
	st := store.New(keepOpen{b.drv}, store.Options{})
	b.t.Cleanup(func() { _ = st.Close() })
	return st
}

type keepOpen struct{ store.Driver }

func (keepOpen) Close() error { return nil }

func concurrently(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

func sortedIDs(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}
