package storetest

import (
	"errors"
	"fmt"
	"sync"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// The set-based forms (store.ManyTx): one call for many rows, each row with
// its own answer, the same answer the row method gives.

// kind names which of the contract's errors err is, for comparing answers.
func kind(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrNotFound):
		return "ErrNotFound"
	case errors.Is(err, store.ErrNotYours):
		return "ErrNotYours"
	case errors.Is(err, store.ErrConflict):
		return "ErrConflict"
	}
	return "other error"
}

// rolledBack runs fn in a transaction that is then rolled back, so the same
// starting state can be tried twice.
func (b *bundle) rolledBack(what string, fn func(tx store.Tx) error) {
	b.t.Helper()
	errUndo := errors.New("undo")
	if err := b.write(func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errUndo
	}); !errors.Is(err, errUndo) {
		b.fatalf("%s: %v", what, err)
	}
}

// claimScene is one command in each state a claim can meet, and the
// calls that meet them (want: the expected answer).
func (b *bundle) claimScene() (ps []store.ClaimParams, want []string) {
	b.t.Helper()
	e := b.addExecution()
	issuedCmd := b.addCommand(e.ExecutionID, b.now)
	live := b.addCommand(e.ExecutionID, b.now)
	b.mustClaim(live.EventID, "worker-a", b.now)
	ended := b.addCommand(e.ExecutionID, b.now)
	held := b.mustClaim(ended.EventID, "worker-a", b.now)
	_, err := b.finish(completeParams(held, b.now))
	b.mustNil("CommandFinish", err)
	expired := b.addCommand(e.ExecutionID, b.now)
	b.mustClaim(expired.EventID, "worker-a", b.now.Add(-2*leaseTTL))
	startable := b.addCommand(e.ExecutionID, b.now)
	claim := func(id int64) store.ClaimParams {
		return store.ClaimParams{EventID: id, WorkerID: "worker-b", Now: b.now, LeaseTTL: leaseTTL, TokenID: 9}
	}
	start := claim(startable.EventID)
	start.Start = true
	// Not in event id order: the answers follow the call's order, not the
	// order the rows are locked in.
	ps = []store.ClaimParams{claim(expired.EventID), claim(issuedCmd.EventID), claim(live.EventID), claim(ended.EventID),
		claim(b.ids.Next()), claim(issuedCmd.EventID), start}
	want = []string{"ok", "ok", "ErrConflict", "ErrConflict", "ErrNotFound", "ErrConflict", "ok"}
	return ps, want
}

// finishScene is the same for reports.
func (b *bundle) finishScene() (ps []store.FinishParams, want []string) {
	b.t.Helper()
	e := b.addExecution()
	held := b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "worker-a", b.now)
	failing := b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "worker-a", b.now)
	tokened, err := b.claimWithToken(b.addCommand(e.ExecutionID, b.now).EventID, "worker-a", 7, b.now)
	b.mustNil("CommandClaim with token 7", err)
	stale := b.addCommand(e.ExecutionID, b.now)
	b.mustClaim(stale.EventID, "worker-a", b.now.Add(-2*leaseTTL))
	b.mustClaim(stale.EventID, "worker-b", b.now) // attempt 2: worker-a's attempt 1 is stale
	forged := completeParams(tokened, b.now)
	forged.TokenID = 8
	fail := completeParams(failing, b.now)
	fail.Status, fail.Result, fail.Error = api.CmdFailed, nil, "exit 1"
	lost := completeParams(held, b.now)
	lost.EventID, lost.WorkerID, lost.Attempt = stale.EventID, "worker-a", 1
	missing := completeParams(held, b.now)
	missing.EventID = b.ids.Next()
	// A repeated id gets ErrConflict whatever the first's answer was (the
	// first had the chance); a call carries one worker's token, so the
	// holder's genuine report never shares a call with a forged one.
	ps = []store.FinishParams{forged, completeParams(held, b.now), lost, missing, completeParams(held, b.now), fail}
	want = []string{"ErrNotYours", "ok", "ErrConflict", "ErrNotFound", "ErrConflict", "ok"}
	return ps, want
}

func manyCases() []testCase {
	return []testCase{
		{"ClaimManyMixed", func(b *bundle) {
			ps, want := b.claimScene()
			var many, rows []store.ClaimOutcome
			b.rolledBack("CommandClaimMany", func(tx store.Tx) error {
				var err error
				many, err = tx.CommandClaimMany(b.ctx(), ps)
				return err
			})
			b.rolledBack("CommandClaim row by row", func(tx store.Tx) error {
				for _, p := range ps {
					c, err := tx.CommandClaim(b.ctx(), p)
					rows = append(rows, store.ClaimOutcome{Command: c, Err: err})
				}
				return nil
			})
			if len(many) != len(ps) {
				b.fatalf("CommandClaimMany gave %d answers for %d claims", len(many), len(ps))
			}
			for i := range ps {
				what := fmt.Sprintf("claim %d (command %d)", i, ps[i].EventID)
				if got := kind(many[i].Err); got != want[i] || got != kind(rows[i].Err) {
					b.fatalf("%s: CommandClaimMany answered %s (%v), want %s; CommandClaim answered %s", what, got, many[i].Err, want[i], kind(rows[i].Err))
				}
				if many[i].Err == nil {
					b.wantCommand(what+": CommandClaimMany vs CommandClaim", many[i].Command, rows[i].Command)
				}
			}
			// Committed, the winners hold their leases.
			_, err := txDo(b, func(tx store.Tx) ([]store.ClaimOutcome, error) { return tx.CommandClaimMany(b.ctx(), ps) })
			b.mustNil("CommandClaimMany committed", err)
			if c := b.getCommand(ps[0].EventID); c.Attempt != 2 || c.WorkerID != "worker-b" || c.ClaimTokenID != 9 {
				b.fatalf("expired lease re-claimed: attempt %d worker %q token %d, want 2 worker-b 9", c.Attempt, c.WorkerID, c.ClaimTokenID)
			}
			if c := b.getCommand(ps[6].EventID); c.Status != api.CmdRunning {
				b.fatalf("claim with Start: status %s, want running", c.Status)
			}
		}},
		{"FinishManyMixed", func(b *bundle) {
			ps, want := b.finishScene()
			var many, rows []store.FinishOutcome
			b.rolledBack("CommandFinishMany", func(tx store.Tx) error {
				var err error
				many, err = tx.CommandFinishMany(b.ctx(), ps)
				return err
			})
			b.rolledBack("CommandFinish row by row", func(tx store.Tx) error {
				for _, p := range ps {
					c, err := tx.CommandFinish(b.ctx(), p)
					rows = append(rows, store.FinishOutcome{Command: c, Err: err})
				}
				return nil
			})
			if len(many) != len(ps) {
				b.fatalf("CommandFinishMany gave %d answers for %d reports", len(many), len(ps))
			}
			for i := range ps {
				what := fmt.Sprintf("report %d (command %d)", i, ps[i].EventID)
				if got := kind(many[i].Err); got != want[i] || got != kind(rows[i].Err) {
					b.fatalf("%s: CommandFinishMany answered %s (%v), want %s; CommandFinish answered %s", what, got, many[i].Err, want[i], kind(rows[i].Err))
				}
				if many[i].Err == nil {
					b.wantCommand(what+": CommandFinishMany vs CommandFinish", many[i].Command, rows[i].Command)
				}
			}
			_, err := txDo(b, func(tx store.Tx) ([]store.FinishOutcome, error) { return tx.CommandFinishMany(b.ctx(), ps) })
			b.mustNil("CommandFinishMany committed", err)
			if c := b.getCommand(ps[0].EventID); c.Status != api.CmdClaimed {
				b.fatalf("forged report changed the command: status %s, want claimed (the holder keeps its lease)", c.Status)
			}
			if c := b.getCommand(ps[5].EventID); c.Status != api.CmdFailed || c.Error != "exit 1" || c.Result != nil {
				b.fatalf("failed report: status %s error %q result %q, want failed, exit 1, nil", c.Status, c.Error, c.Result)
			}
		}},
		{"FinishManyBadStatusIsItsOwnAnswer", func(b *bundle) {
			e := b.addExecution()
			good := b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "worker-a", b.now)
			bad := b.mustClaim(b.addCommand(e.ExecutionID, b.now).EventID, "worker-a", b.now)
			badP := completeParams(bad, b.now)
			badP.Status = api.CmdRunning
			out, err := txDo(b, func(tx store.Tx) ([]store.FinishOutcome, error) {
				return tx.CommandFinishMany(b.ctx(), []store.FinishParams{badP, completeParams(good, b.now)})
			})
			b.mustNil("CommandFinishMany", err)
			if out[0].Err == nil || kind(out[0].Err) != "other error" || out[1].Err != nil {
				b.fatalf("answers %v, %v: want a status error for the first only", out[0].Err, out[1].Err)
			}
		}},
		{"ManyEmpty", func(b *bundle) {
			b.mustWrite("empty calls", func(tx store.Tx) error {
				c, err := tx.CommandClaimMany(b.ctx(), nil)
				if err != nil || len(c) != 0 {
					return fmt.Errorf("CommandClaimMany(nil) = %v, %v", c, err)
				}
				f, err := tx.CommandFinishMany(b.ctx(), nil)
				if err != nil || len(f) != 0 {
					return fmt.Errorf("CommandFinishMany(nil) = %v, %v", f, err)
				}
				m, err := tx.LockExecutions(b.ctx(), nil)
				if err != nil || len(m) != 0 {
					return fmt.Errorf("LockExecutions(nil) = %v, %v", m, err)
				}
				return nil
			})
		}},
		{"LockExecutions", func(b *bundle) {
			e1, e2 := b.addExecution(), b.addExecution()
			b.mustWrite("ExecutionTouch", func(tx store.Tx) error { return tx.ExecutionTouch(b.ctx(), e2.ExecutionID, 42) })
			missing := b.ids.Next()
			got, err := txDo(b, func(tx store.Tx) (map[int64]store.Execution, error) {
				return tx.LockExecutions(b.ctx(), []int64{e2.ExecutionID, missing, e1.ExecutionID, e2.ExecutionID})
			})
			b.mustNil("LockExecutions", err)
			if len(got) != 2 {
				b.fatalf("LockExecutions gave %d executions, want 2 (the missing id left out)", len(got))
			}
			for _, e := range []store.Execution{e1, e2} {
				one, err := txDo(b, func(tx store.Tx) (store.Execution, error) { return tx.LockExecution(b.ctx(), e.ExecutionID) })
				b.mustNil("LockExecution", err)
				if g := got[e.ExecutionID]; g.Revision != one.Revision || g.Status != one.Status || g.Path != one.Path || !g.StartedAt.Equal(one.StartedAt) {
					b.fatalf("LockExecutions[%d] = %+v, LockExecution = %+v", e.ExecutionID, g, one)
				}
			}
			if got[e2.ExecutionID].Revision != 42 {
				b.fatalf("revision %d, want 42", got[e2.ExecutionID].Revision)
			}
		}},
		{"ClaimManyRace", func(b *bundle) {
			// Two callers claim overlapping sets, listed in opposite
			// orders: no deadlock, and every command is won exactly once.
			e := b.addExecution()
			const n = 24
			ids := make([]int64, n)
			for i := range ids {
				ids[i] = b.addCommand(e.ExecutionID, b.now).EventID
			}
			sets := [2][]int64{ids[:n*2/3], nil}
			for i := n - 1; i >= n/3; i-- {
				sets[1] = append(sets[1], ids[i])
			}
			wins := make(map[int64]int)
			var mu sync.Mutex
			var wg sync.WaitGroup
			errs := make([]error, len(sets))
			for g, set := range sets {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ps := make([]store.ClaimParams, len(set))
					for i, id := range set {
						ps[i] = store.ClaimParams{EventID: id, WorkerID: fmt.Sprintf("worker-%d", g), Now: b.now, LeaseTTL: leaseTTL}
					}
					out, err := txDo(b, func(tx store.Tx) ([]store.ClaimOutcome, error) { return tx.CommandClaimMany(b.ctx(), ps) })
					if err != nil {
						errs[g] = err
						return
					}
					mu.Lock()
					defer mu.Unlock()
					for i, o := range out {
						switch {
						case o.Err == nil:
							wins[set[i]]++
						case !errors.Is(o.Err, store.ErrConflict):
							errs[g] = o.Err
						}
					}
				}()
			}
			wg.Wait()
			for _, err := range errs {
				b.mustNil("CommandClaimMany racing", err)
			}
			for _, id := range ids {
				if wins[id] != 1 {
					b.fatalf("command %d won %d times, want exactly once", id, wins[id])
				}
			}
		}},
	}
}
