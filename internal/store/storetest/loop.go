package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// newLoop builds an unsaved parallel loop of execution execID.
func (b *bundle) newLoop(execID int64) store.Loop {
	return store.Loop{
		LoopID:      b.ids.Next(),
		ExecutionID: execID,
		Step:        "each_host",
		Total:       4,
		Mode:        "parallel",
		MaxInFlight: 2,
		Items:       jsonItems,
		CreatedAt:   b.now,
		UpdatedAt:   b.now,
	}
}

// running is the state LoopInsert must produce from l (whose times are set).
func running(l store.Loop) store.Loop {
	l.Status, l.Result = api.LoopRunning, nil
	return l
}

// addLoop inserts l and returns the row LoopInsert must have stored.
func (b *bundle) addLoop(l store.Loop) store.Loop {
	b.t.Helper()
	b.mustWrite("LoopInsert", func(tx store.Tx) error { return tx.LoopInsert(b.ctx(), l) })
	return running(l)
}

func (b *bundle) getLoop(id int64) store.Loop {
	b.t.Helper()
	l, err := readDo(b, func(q store.Querier) (store.Loop, error) { return q.LoopGet(b.ctx(), id) })
	b.mustNil(fmt.Sprintf("LoopGet %d", id), err)
	return l
}

func (b *bundle) finishLoop(id int64, status api.LoopStatus, result json.RawMessage, now time.Time) error {
	return b.write(func(tx store.Tx) error { return tx.LoopFinish(b.ctx(), id, status, result, now) })
}

func (b *bundle) wantLoop(what string, got, want store.Loop) {
	b.t.Helper()
	var d diff
	d.eq("LoopID", got.LoopID, want.LoopID)
	d.eq("ExecutionID", got.ExecutionID, want.ExecutionID)
	d.eq("Step", got.Step, want.Step)
	d.eq("Total", got.Total, want.Total)
	d.eq("Mode", got.Mode, want.Mode)
	d.eq("MaxInFlight", got.MaxInFlight, want.MaxInFlight)
	d.json("Items", got.Items, want.Items)
	d.eq("Status", got.Status, want.Status)
	d.json("Result", got.Result, want.Result)
	d.time("CreatedAt", got.CreatedAt, want.CreatedAt)
	d.time("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	b.check(what, d)
}

func loopCases() []testCase {
	return []testCase{
		{"InsertGet", func(b *bundle) {
			e := b.addExecution()
			l := b.newLoop(e.ExecutionID)
			l.UpdatedAt = b.now.Add(time.Second)
			// A loop always starts running without a result, whatever the
			// caller left in those fields.
			dirty := l
			dirty.Status, dirty.Result = api.LoopDone, jsonResult
			b.mustWrite("LoopInsert", func(tx store.Tx) error { return tx.LoopInsert(b.ctx(), dirty) })
			b.wantLoop("LoopGet after LoopInsert with caller-set status and result", b.getLoop(l.LoopID), running(l))
		}},
		{"InsertZeroTimesMeanNow", func(b *bundle) {
			e := b.addExecution()
			l := b.newLoop(e.ExecutionID)
			l.CreatedAt, l.UpdatedAt = time.Time{}, time.Time{}
			before := time.Now().UTC().Truncate(time.Microsecond)
			b.mustWrite("LoopInsert", func(tx store.Tx) error { return tx.LoopInsert(b.ctx(), l) })
			after := time.Now().UTC()
			got := b.getLoop(l.LoopID)
			for field, at := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt} {
				if at.Before(before) || at.After(after) {
					b.fatalf("LoopInsert with zero times stored %s = %s, want the insert time (between %s and %s)", field, at, before, after)
				}
			}
			l.CreatedAt, l.UpdatedAt = got.CreatedAt, got.UpdatedAt
			b.wantLoop("loop inserted with zero times", got, running(l))
		}},
		{"InsertDuplicateIsConflict", func(b *bundle) {
			e := b.addExecution()
			want := b.addLoop(b.newLoop(e.ExecutionID))
			again := want
			again.Step, again.Total = "other", 9
			err := b.write(func(tx store.Tx) error { return tx.LoopInsert(b.ctx(), again) })
			b.wantErr("LoopInsert of an existing loop_id", err, store.ErrConflict)
			b.wantLoop("loop after the rejected duplicate insert", b.getLoop(want.LoopID), want)
		}},
		{"GetMissing", func(b *bundle) {
			_, err := readDo(b, func(q store.Querier) (store.Loop, error) { return q.LoopGet(b.ctx(), b.ids.Next()) })
			b.wantErr("LoopGet of an unknown id", err, store.ErrNotFound)
		}},
		{"ListByExecution", func(b *bundle) {
			e := b.addExecution()
			other := b.addExecution()
			l1, l2, l3 := b.newLoop(e.ExecutionID), b.newLoop(other.ExecutionID), b.newLoop(e.ExecutionID)
			l3.Mode, l3.MaxInFlight, l3.Items = "sequential", 1, nil
			// Reverse id order: listing must sort by loop_id.
			b.mustWrite("LoopInsert x3", func(tx store.Tx) error {
				for _, l := range []store.Loop{l3, l2, l1} {
					if err := tx.LoopInsert(b.ctx(), l); err != nil {
						return err
					}
				}
				return nil
			})
			list, err := readDo(b, func(q store.Querier) ([]store.Loop, error) { return q.LoopListByExecution(b.ctx(), e.ExecutionID) })
			b.mustNil("LoopListByExecution", err)
			if len(list) != 2 {
				b.fatalf("LoopListByExecution returned %d loops, want 2 of this execution only", len(list))
			}
			b.wantLoop("LoopListByExecution[0]", list[0], running(l1))
			b.wantLoop("LoopListByExecution[1] (nil items stay nil)", list[1], running(l3))
			empty, err := readDo(b, func(q store.Querier) ([]store.Loop, error) { return q.LoopListByExecution(b.ctx(), b.ids.Next()) })
			b.mustNil("LoopListByExecution of an unknown execution", err)
			if len(empty) != 0 {
				b.fatalf("LoopListByExecution of an unknown execution = %d loops, want none", len(empty))
			}
		}},
		{"FinishStoresResult", func(b *bundle) {
			e := b.addExecution()
			for _, tc := range []struct {
				status api.LoopStatus
				result json.RawMessage
			}{
				{api.LoopDone, json.RawMessage(`[ {"out": "a"}, null,  {"out":"c"} ]`)},
				{api.LoopFailed, jsonResult},
				{api.LoopFailed, nil},
			} {
				want := b.addLoop(b.newLoop(e.ExecutionID))
				at := b.now.Add(time.Minute)
				b.mustNil("LoopFinish "+string(tc.status), b.finishLoop(want.LoopID, tc.status, tc.result, at))
				// Only status, result and updated_at change.
				want.Status, want.Result, want.UpdatedAt = tc.status, tc.result, at
				b.wantLoop("loop after LoopFinish "+string(tc.status), b.getLoop(want.LoopID), want)
			}
		}},
		{"FinishOnlyFromRunning", func(b *bundle) {
			e := b.addExecution()
			l := b.addLoop(b.newLoop(e.ExecutionID))
			at := b.now.Add(time.Minute)
			b.mustNil("LoopFinish", b.finishLoop(l.LoopID, api.LoopDone, jsonResult, at))
			done := b.getLoop(l.LoopID)
			for _, status := range []api.LoopStatus{api.LoopDone, api.LoopFailed} {
				err := b.finishLoop(l.LoopID, status, json.RawMessage(`"late"`), at.Add(time.Hour))
				b.wantErr("LoopFinish "+string(status)+" of a finished loop", err, store.ErrConflict)
			}
			b.wantLoop("loop after rejected second finishes", b.getLoop(l.LoopID), done)
		}},
		{"FinishRejectsOtherStatuses", func(b *bundle) {
			e := b.addExecution()
			l := b.addLoop(b.newLoop(e.ExecutionID))
			for _, status := range []api.LoopStatus{api.LoopRunning, "", "cancelled", "completed"} {
				if err := b.finishLoop(l.LoopID, status, jsonResult, b.now.Add(time.Minute)); err == nil {
					b.fatalf("LoopFinish with status %q succeeded, want an error (only done or failed)", status)
				}
			}
			b.wantLoop("loop after invalid finishes", b.getLoop(l.LoopID), l)
		}},
		{"FinishMissing", func(b *bundle) {
			err := b.finishLoop(b.ids.Next(), api.LoopDone, jsonResult, b.now)
			b.wantErr("LoopFinish of an unknown loop", err, store.ErrNotFound)
		}},
		{"FinishRace", func(b *bundle) {
			e := b.addExecution()
			l := b.addLoop(b.newLoop(e.ExecutionID))
			result := func(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"racer": %d}`, i)) }
			errs := make([]error, loopRacers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range loopRacers {
				wg.Go(func() {
					<-start
					// Each racer has its own transaction, like the last
					// iterations of a loop completing on separate requests.
					errs[i] = b.finishLoop(l.LoopID, api.LoopDone, result(i), b.now)
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					b.fatalf("racers %d and %d both finished the loop (loop.done would fire twice)", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, store.ErrConflict):
					b.fatalf("racer %d got %v, want ErrConflict", i, err)
				}
			}
			if winner < 0 {
				b.fatalf("no racer among %d finished the loop", loopRacers)
			}
			want := l
			want.Status, want.Result, want.UpdatedAt = api.LoopDone, result(winner), b.now
			b.wantLoop("loop after the race", b.getLoop(l.LoopID), want)
		}},
	}
}
