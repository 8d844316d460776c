package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

func commandCases() []testCase {
	return []testCase{
		{"InsertDefaults", func(b *bundle) {
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now.Add(-time.Minute))
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			b.wantCommand("command after CommandInsert", b.getCommand(c.EventID), issued(c))
		}},
		{"PoolRoundTrip", func(b *bundle) {
			// A routed command keeps its pool in every row the drivers
			// return: the reaper and a release re-notify to the same pool
			// from what CommandsDue, CommandHeartbeat and
			// CommandMarkRepublished give back.
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now.Add(-time.Minute))
			c.Pool = "gpu"
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			b.wantCommand("routed command after CommandInsert", b.getCommand(c.EventID), issued(c))
			plain := b.addCommand(e.ExecutionID, b.now.Add(-time.Minute))
			if plain.Pool != "" {
				b.fatalf("command without a pool reads back pool %q, want \"\"", plain.Pool)
			}
			list, err := readDo(b, func(q store.Querier) ([]store.Command, error) {
				return q.CommandListByExecution(b.ctx(), e.ExecutionID)
			})
			b.mustNil("CommandListByExecution", err)
			if len(list) != 2 || list[0].Pool != "gpu" || list[1].Pool != "" {
				b.fatalf("CommandListByExecution pools = %+v, want gpu then \"\"", list)
			}
			b.published(c.EventID, plain.EventID)
			due, err := readDo(b, func(q store.Querier) ([]store.Command, error) { return q.CommandsDue(b.ctx(), b.now, b.now, 10) })
			b.mustNil("CommandsDue", err)
			routed := slices.IndexFunc(due, func(d store.Command) bool { return d.EventID == c.EventID })
			if len(due) != 2 || routed < 0 || due[routed].Pool != "gpu" {
				b.fatalf("CommandsDue = %+v, want both commands, the routed one with pool gpu", due)
			}
			claimed := b.mustClaim(c.EventID, "worker-a", b.now)
			if claimed.Pool != "gpu" {
				b.fatalf("CommandClaim returned pool %q, want gpu", claimed.Pool)
			}
			released, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandHeartbeat(b.ctx(), c.EventID, "worker-a", claimed.Attempt, 0, b.now, 0)
			})
			b.mustNil("CommandHeartbeat", err)
			if released.Pool != "gpu" {
				b.fatalf("CommandHeartbeat returned pool %q, want gpu", released.Pool)
			}
			again, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandMarkRepublished(b.ctx(), c.EventID, b.now, "")
			})
			b.mustNil("CommandMarkRepublished", err)
			if again.Pool != "gpu" {
				b.fatalf("CommandMarkRepublished returned pool %q, want gpu", again.Pool)
			}
		}},
		{"InsertIgnoresCallerState", func(b *bundle) {
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now)
			// The projection always starts issued; whatever the caller left
			// in these fields must not leak into the row.
			dirty := c
			dirty.Status, dirty.Attempt, dirty.Publishes = api.CmdRunning, 7, 9
			dirty.PublishedAt = b.now.Add(-time.Hour)
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), dirty) })
			b.wantCommand("command inserted with caller-set status/attempt/publishes", b.getCommand(c.EventID), issued(c))
		}},
		{"InsertZeroCreatedAtMeansNow", func(b *bundle) {
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, time.Time{})
			before := time.Now().UTC().Truncate(time.Microsecond)
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			after := time.Now().UTC()
			got := b.getCommand(c.EventID)
			if got.CreatedAt.Before(before) || got.CreatedAt.After(after) {
				b.fatalf("CommandInsert with zero CreatedAt stored %s, want the insert time (between %s and %s)", got.CreatedAt, before, after)
			}
			c.CreatedAt = got.CreatedAt
			b.wantCommand("command inserted with zero CreatedAt", got, issued(c))
		}},
		{"InsertAvailableAtAndLoopFields", func(b *bundle) {
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now)
			// A retry of a loop iteration, held back by its backoff.
			c.AvailableAt = b.now.Add(30 * time.Second)
			c.LoopID, c.LoopIndex, c.Retry = b.ids.Next(), 3, 2
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			want := issued(c)
			if !want.PublishedAt.Equal(c.AvailableAt) {
				b.fatalf("fixture: issued() PublishedAt = %s, want AvailableAt", want.PublishedAt)
			}
			b.wantCommand("command inserted with AvailableAt, LoopID, LoopIndex and Retry (PublishedAt = AvailableAt)", b.getCommand(c.EventID), want)
			list, err := readDo(b, func(q store.Querier) ([]store.Command, error) {
				return q.CommandListByExecution(b.ctx(), e.ExecutionID)
			})
			b.mustNil("CommandListByExecution", err)
			b.wantCommandIDs("CommandListByExecution", list, c.EventID)
			b.wantCommand("CommandListByExecution[0]", list[0], want)
			// Every RETURNING path carries the new columns too.
			got := b.mustClaim(c.EventID, "worker-a", c.AvailableAt)
			want.Status, want.Attempt, want.WorkerID = api.CmdClaimed, 1, "worker-a"
			want.LeaseExpires, want.UpdatedAt = leaseAt(c.AvailableAt), c.AvailableAt
			b.wantCommand("CommandClaim result", got, want)
			got, err = txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandMarkRepublished(b.ctx(), c.EventID, c.AvailableAt, "")
			})
			b.mustNil("CommandMarkRepublished", err)
			want.Publishes, want.UpdatedAt = 2, time.Time{}
			b.wantCommand("CommandMarkRepublished result", got, want)
		}},
		{"NilInputStaysNil", func(b *bundle) {
			e := b.addExecution()
			c := b.newCommand(e.ExecutionID, b.now)
			c.Input = nil
			b.mustWrite("CommandInsert", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), c) })
			b.wantCommand("command inserted without input", b.getCommand(c.EventID), issued(c))
		}},
		{"GetMissing", func(b *bundle) {
			_, err := readDo(b, func(q store.Querier) (store.Command, error) { return q.CommandGet(b.ctx(), b.ids.Next()) })
			b.wantErr("CommandGet of an unknown id", err, store.ErrNotFound)
		}},
		{"ListByExecution", func(b *bundle) {
			e := b.addExecution()
			other := b.addExecution()
			c1 := b.newCommand(e.ExecutionID, b.now)
			c2 := b.newCommand(other.ExecutionID, b.now)
			c3 := b.newCommand(e.ExecutionID, b.now)
			b.mustWrite("CommandInsert", func(tx store.Tx) error {
				for _, c := range []store.Command{c3, c2, c1} {
					if err := tx.CommandInsert(b.ctx(), c); err != nil {
						return err
					}
				}
				return nil
			})
			list, err := readDo(b, func(q store.Querier) ([]store.Command, error) {
				return q.CommandListByExecution(b.ctx(), e.ExecutionID)
			})
			b.mustNil("CommandListByExecution", err)
			b.wantCommandIDs("CommandListByExecution (this execution, event_id asc)", list, c1.EventID, c3.EventID)
			b.wantCommand("CommandListByExecution[0]", list[0], issued(c1))
			empty, err := readDo(b, func(q store.Querier) ([]store.Command, error) {
				return q.CommandListByExecution(b.ctx(), b.ids.Next())
			})
			b.mustNil("CommandListByExecution of an unknown execution", err)
			b.wantCommandIDs("CommandListByExecution of an unknown execution", empty)
		}},
		{"CancelExecution", func(b *bundle) {
			e := b.addExecution()
			other := b.addExecution()
			isd := b.addCommand(e.ExecutionID, b.now)
			clm := b.addCommand(e.ExecutionID, b.now)
			run := b.addCommand(e.ExecutionID, b.now)
			done := b.addCommand(e.ExecutionID, b.now)
			bystander := b.addCommand(other.ExecutionID, b.now)
			b.mustClaim(clm.EventID, "w", b.now)
			_, err := b.start(b.mustClaim(run.EventID, "w", b.now).EventID, "w", 1, b.now)
			b.mustNil("CommandStart", err)
			_, err = b.finish(completeParams(b.mustClaim(done.EventID, "w", b.now), b.now))
			b.mustNil("CommandFinish", err)

			later := b.now.Add(time.Minute)
			n, err := txDo(b, func(tx store.Tx) (int, error) { return tx.CommandCancelExecution(b.ctx(), e.ExecutionID, later) })
			b.mustNil("CommandCancelExecution", err)
			if n != 3 {
				b.fatalf("CommandCancelExecution returned %d, want 3 (issued, claimed, running)", n)
			}
			for _, c := range []store.Command{isd, clm, run} {
				if got := b.getCommand(c.EventID); got.Status != api.CmdCancelled {
					b.fatalf("command %d status = %q after cancel, want cancelled", c.EventID, got.Status)
				}
			}
			if got := b.getCommand(done.EventID); got.Status != api.CmdCompleted {
				b.fatalf("CommandCancelExecution changed a completed command to %q", got.Status)
			}
			if got := b.getCommand(bystander.EventID); got.Status != api.CmdIssued {
				b.fatalf("CommandCancelExecution changed a command of another execution to %q", got.Status)
			}
			n, err = txDo(b, func(tx store.Tx) (int, error) { return tx.CommandCancelExecution(b.ctx(), e.ExecutionID, later) })
			b.mustNil("second CommandCancelExecution", err)
			if n != 0 {
				b.fatalf("second CommandCancelExecution returned %d, want 0", n)
			}
			_, err = b.claim(isd.EventID, "w2", later.Add(time.Hour))
			b.wantErr("CommandClaim of a cancelled command", err, store.ErrConflict)
			_, err = b.heartbeat(clm.EventID, "w", 1, later)
			b.wantErr("CommandHeartbeat of a cancelled command", err, store.ErrConflict)
			_, err = b.finish(store.FinishParams{EventID: run.EventID, WorkerID: "w", Attempt: 1, Status: api.CmdCompleted, Now: later})
			b.wantErr("CommandFinish of a cancelled command", err, store.ErrConflict)
		}},
		{"MarkRepublished", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now.Add(-time.Hour))
			for n := 2; n <= 3; n++ {
				at := b.now.Add(time.Duration(n) * time.Second)
				got, err := txDo(b, func(tx store.Tx) (store.Command, error) {
					return tx.CommandMarkRepublished(b.ctx(), c.EventID, at, "")
				})
				b.mustNil("CommandMarkRepublished", err)
				want := c
				want.Publishes, want.PublishedAt = n, at
				b.wantCommand("CommandMarkRepublished result", got, want)
				b.wantCommand("command after CommandMarkRepublished", b.getCommand(c.EventID), want)
			}
			_, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandMarkRepublished(b.ctx(), b.ids.Next(), b.now, "")
			})
			b.wantErr("CommandMarkRepublished of an unknown id", err, store.ErrNotFound)
		}},
	}
}

func claimCases() []testCase {
	return []testCase{
		{"FromIssued", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now.Add(-time.Minute))
			got, err := b.claim(c.EventID, "worker-a", b.now)
			b.mustNil("CommandClaim", err)
			want := c
			want.Status, want.Attempt, want.WorkerID = api.CmdClaimed, 1, "worker-a"
			want.LeaseExpires, want.UpdatedAt = leaseAt(b.now), b.now
			b.wantCommand("CommandClaim result", got, want)
			b.wantCommand("command after CommandClaim", b.getCommand(c.EventID), want)
		}},
		{"StartMovesStraightToRunning", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			got, err := txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandClaim(b.ctx(), store.ClaimParams{EventID: c.EventID, WorkerID: "worker-a", Now: b.now, LeaseTTL: leaseTTL, Start: true})
			})
			b.mustNil("CommandClaim with Start", err)
			want := c
			want.Status, want.Attempt, want.WorkerID = api.CmdRunning, 1, "worker-a"
			want.LeaseExpires, want.UpdatedAt = leaseAt(b.now), b.now
			b.wantCommand("CommandClaim with Start", got, want)
			b.wantCommand("command after CommandClaim with Start", b.getCommand(c.EventID), want)
			// The holder's later start is still accepted (an older worker
			// that claims and starts separately).
			_, err = txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandStart(b.ctx(), c.EventID, "worker-a", 1, 0, b.now, leaseTTL)
			})
			b.mustNil("CommandStart after a claim with Start", err)
			// A started claim is exclusive like any other.
			_, err = b.claim(c.EventID, "worker-b", b.now)
			b.wantErr("CommandClaim of a command claimed with Start", err, store.ErrConflict)
		}},
		{"ConflictOnLiveLease", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			held := b.mustClaim(c.EventID, "worker-a", b.now)
			for _, tc := range []struct {
				worker string
				at     time.Time
			}{
				{"worker-b", b.now},
				{"worker-b", held.LeaseExpires.Add(-time.Microsecond)},
				{"worker-a", b.now.Add(time.Second)}, // even the holder cannot re-claim a live lease
			} {
				_, err := b.claim(c.EventID, tc.worker, tc.at)
				b.wantErr(fmt.Sprintf("CommandClaim by %s at lease-%s", tc.worker, held.LeaseExpires.Sub(tc.at)), err, store.ErrConflict)
			}
			b.wantCommand("command after rejected claims", b.getCommand(c.EventID), held)
		}},
		{"ReclaimAfterExpiry", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			first := b.mustClaim(c.EventID, "worker-a", b.now)
			// Exactly at expiry the lease counts as expired (LeaseExpires <= Now).
			at := *first.LeaseExpires
			got, err := b.claim(c.EventID, "worker-b", at)
			b.mustNil("CommandClaim at the exact lease expiry", err)
			want := first
			want.Attempt, want.WorkerID, want.LeaseExpires, want.UpdatedAt = 2, "worker-b", leaseAt(at), at
			b.wantCommand("re-claimed command", got, want)
		}},
		{"ReclaimRunningAfterExpiry", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			b.mustClaim(c.EventID, "worker-a", b.now)
			run, err := b.start(c.EventID, "worker-a", 1, b.now)
			b.mustNil("CommandStart", err)
			at := run.LeaseExpires.Add(time.Second)
			got, err := b.claim(c.EventID, "worker-b", at)
			b.mustNil("CommandClaim of a running command with an expired lease", err)
			if got.Status != api.CmdClaimed || got.Attempt != 2 || got.WorkerID != "worker-b" {
				b.fatalf("re-claim of running command gave status %q attempt %d worker %q, want claimed 2 worker-b", got.Status, got.Attempt, got.WorkerID)
			}
		}},
		{"Terminal", func(b *bundle) {
			e := b.addExecution()
			for _, status := range []api.CommandStatus{api.CmdCompleted, api.CmdFailed} {
				c := b.addCommand(e.ExecutionID, b.now)
				held := b.mustClaim(c.EventID, "worker-a", b.now)
				p := completeParams(held, b.now)
				p.Status = status
				_, err := b.finish(p)
				b.mustNil("CommandFinish "+string(status), err)
				// Far past the old lease: only the terminal status can refuse.
				_, err = b.claim(c.EventID, "worker-b", b.now.Add(24*time.Hour))
				b.wantErr("CommandClaim of a "+string(status)+" command", err, store.ErrConflict)
			}
		}},
		{"Missing", func(b *bundle) {
			_, err := b.claim(b.ids.Next(), "worker-a", b.now)
			b.wantErr("CommandClaim of an unknown command", err, store.ErrNotFound)
		}},
		{"Race", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			errs := make([]error, claimRacers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range claimRacers {
				wg.Go(func() {
					<-start
					// Each racer has its own transaction, like separate
					// API server requests.
					_, errs[i] = b.claim(c.EventID, fmt.Sprintf("racer-%d", i), b.now)
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					b.fatalf("racers %d and %d both claimed the command", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, store.ErrConflict):
					// A busy/lock/serialization error is a failure: the
					// losers must get a clean ErrConflict.
					b.fatalf("racer %d got %v, want ErrConflict", i, err)
				}
			}
			if winner < 0 {
				b.fatalf("no racer among %d claimed the command", claimRacers)
			}
			got := b.getCommand(c.EventID)
			if got.Attempt != 1 || got.WorkerID != fmt.Sprintf("racer-%d", winner) || got.Status != api.CmdClaimed {
				b.fatalf("after the race: attempt %d worker %q status %q, want attempt 1 by racer-%d, claimed", got.Attempt, got.WorkerID, got.Status, winner)
			}
		}},
	}
}

func leaseCases() []testCase {
	return []testCase{
		{"StartMovesToRunning", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			held := b.mustClaim(c.EventID, "worker-a", b.now)
			at := b.now.Add(10 * time.Second)
			got, err := b.start(c.EventID, "worker-a", 1, at)
			b.mustNil("CommandStart", err)
			want := held
			want.Status, want.LeaseExpires, want.UpdatedAt = api.CmdRunning, leaseAt(at), time.Time{}
			b.wantCommand("CommandStart result", got, want)
			b.wantCommand("command after CommandStart", b.getCommand(c.EventID), want)
			// A repeated start by the holder (a retried request) is allowed.
			at2 := at.Add(time.Second)
			got, err = b.start(c.EventID, "worker-a", 1, at2)
			b.mustNil("second CommandStart by the holder", err)
			want.LeaseExpires = leaseAt(at2)
			b.wantCommand("second CommandStart result", got, want)
		}},
		{"HeartbeatExtendsLease", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			held := b.mustClaim(c.EventID, "worker-a", b.now)
			at := b.now.Add(20 * time.Second)
			got, err := b.heartbeat(c.EventID, "worker-a", 1, at)
			b.mustNil("CommandHeartbeat on a claimed command", err)
			want := held
			want.LeaseExpires, want.UpdatedAt = leaseAt(at), time.Time{}
			b.wantCommand("CommandHeartbeat result (claimed stays claimed)", got, want)

			_, err = b.start(c.EventID, "worker-a", 1, at)
			b.mustNil("CommandStart", err)
			at = at.Add(20 * time.Second)
			got, err = b.heartbeat(c.EventID, "worker-a", 1, at)
			b.mustNil("CommandHeartbeat on a running command", err)
			want.Status, want.LeaseExpires = api.CmdRunning, leaseAt(at)
			b.wantCommand("CommandHeartbeat result (running stays running)", got, want)
			b.wantCommand("command after CommandHeartbeat", b.getCommand(c.EventID), want)
		}},
		{"HolderChecks", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			// Nobody holds an issued command, not even "" with attempt 0.
			_, err := b.start(c.EventID, "", 0, b.now)
			b.wantErr("CommandStart of an issued command", err, store.ErrConflict)
			_, err = b.heartbeat(c.EventID, "", 0, b.now)
			b.wantErr("CommandHeartbeat of an issued command", err, store.ErrConflict)
			_, err = b.finish(store.FinishParams{EventID: c.EventID, Attempt: 0, Status: api.CmdCompleted, Now: b.now})
			b.wantErr("CommandFinish of an issued command", err, store.ErrConflict)

			held := b.mustClaim(c.EventID, "worker-a", b.now)
			for _, who := range []struct {
				worker  string
				attempt int
			}{{"worker-b", 1}, {"worker-a", 2}, {"worker-a", 0}} {
				what := fmt.Sprintf("by %s attempt %d (holder is worker-a attempt 1)", who.worker, who.attempt)
				_, err = b.start(c.EventID, who.worker, who.attempt, b.now)
				b.wantErr("CommandStart "+what, err, store.ErrConflict)
				_, err = b.heartbeat(c.EventID, who.worker, who.attempt, b.now)
				b.wantErr("CommandHeartbeat "+what, err, store.ErrConflict)
				_, err = b.finish(store.FinishParams{EventID: c.EventID, WorkerID: who.worker, Attempt: who.attempt, Status: api.CmdCompleted, Now: b.now})
				b.wantErr("CommandFinish "+what, err, store.ErrConflict)
			}
			b.wantCommand("command after rejected holder calls", b.getCommand(c.EventID), held)
		}},
		{"HolderKeepsExpiredLeaseUntilReclaimed", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			b.mustClaim(c.EventID, "worker-a", b.now)
			late := b.now.Add(10 * leaseTTL)
			got, err := b.heartbeat(c.EventID, "worker-a", 1, late)
			b.mustNil("CommandHeartbeat after lease expiry, not re-claimed", err)
			if !got.LeaseExpires.Equal(late.Add(leaseTTL)) {
				b.fatalf("late heartbeat lease = %v, want %v", got.LeaseExpires, late.Add(leaseTTL))
			}
			late = late.Add(10 * leaseTTL)
			_, err = b.start(c.EventID, "worker-a", 1, late)
			b.mustNil("CommandStart after lease expiry, not re-claimed", err)
			late = late.Add(10 * leaseTTL)
			got, err = b.finish(completeParams(got, late))
			b.mustNil("CommandFinish after lease expiry, not re-claimed", err)
			if got.Status != api.CmdCompleted {
				b.fatalf("late finish status = %q, want completed", got.Status)
			}
		}},
		{"StaleAttemptAfterReclaim", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			a := b.mustClaim(c.EventID, "worker-a", b.now)
			t2 := a.LeaseExpires.Add(time.Second)
			bb := b.mustClaim(c.EventID, "worker-b", t2)
			for _, op := range holderOps(b) {
				_, err := op.fn(c.EventID, "worker-a", 1, t2)
				b.wantErr(op.name+" by worker-a with attempt 1 after worker-b re-claimed", err, store.ErrConflict)
			}
			// The same worker re-claiming also invalidates its old attempt.
			t3 := bb.LeaseExpires.Add(time.Second)
			a3 := b.mustClaim(c.EventID, "worker-a", t3)
			if a3.Attempt != 3 {
				b.fatalf("third claim attempt = %d, want 3", a3.Attempt)
			}
			for _, op := range holderOps(b) {
				_, err := op.fn(c.EventID, "worker-a", 1, t3)
				b.wantErr(op.name+" by worker-a with stale attempt 1 while it holds attempt 3", err, store.ErrConflict)
				_, err = op.fn(c.EventID, "worker-b", 2, t3)
				b.wantErr(op.name+" by worker-b with stale attempt 2", err, store.ErrConflict)
			}
			b.wantCommand("command after stale calls", b.getCommand(c.EventID), a3)
			_, err := b.heartbeat(c.EventID, "worker-a", 3, t3)
			b.mustNil("CommandHeartbeat by the current holder", err)
		}},
		{"FinishStoresResult", func(b *bundle) {
			e := b.addExecution()
			for _, tc := range []struct {
				status api.CommandStatus
				result []byte
				errMsg string
			}{
				{api.CmdCompleted, jsonResult, ""},
				{api.CmdFailed, nil, "exit status 3: disk full"},
				{api.CmdFailed, jsonResult, "partial"},
			} {
				c := b.addCommand(e.ExecutionID, b.now)
				held := b.mustClaim(c.EventID, "worker-a", b.now)
				_, err := b.start(c.EventID, "worker-a", 1, b.now)
				b.mustNil("CommandStart", err)
				at := b.now.Add(time.Minute)
				got, err := b.finish(store.FinishParams{EventID: c.EventID, WorkerID: "worker-a", Attempt: 1, Status: tc.status, Result: tc.result, Error: tc.errMsg, Now: at})
				b.mustNil("CommandFinish "+string(tc.status), err)
				// Finish clears nothing: worker, attempt and lease stay.
				want := held
				want.Status, want.Result, want.Error, want.UpdatedAt = tc.status, tc.result, tc.errMsg, at
				want.LeaseExpires = leaseAt(b.now)
				b.wantCommand("CommandFinish "+string(tc.status)+" result", got, want)
				b.wantCommand("command after CommandFinish "+string(tc.status), b.getCommand(c.EventID), want)
			}
		}},
		{"NoOpsAfterFinish", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			held := b.mustClaim(c.EventID, "worker-a", b.now)
			done, err := b.finish(completeParams(held, b.now))
			b.mustNil("CommandFinish", err)
			for _, op := range holderOps(b) {
				_, err := op.fn(c.EventID, "worker-a", 1, b.now.Add(time.Second))
				b.wantErr(op.name+" by the holder after the command finished", err, store.ErrConflict)
			}
			b.wantCommand("command after calls on a finished command", b.getCommand(c.EventID), done)
		}},
		{"FinishRejectsNonTerminalStatus", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			held := b.mustClaim(c.EventID, "worker-a", b.now)
			for _, status := range []api.CommandStatus{api.CmdRunning, api.CmdClaimed, api.CmdIssued, api.CmdCancelled, ""} {
				p := completeParams(held, b.now)
				p.Status = status
				if _, err := b.finish(p); err == nil {
					b.fatalf("CommandFinish with status %q succeeded, want an error (only completed or failed)", status)
				}
			}
			b.wantCommand("command after invalid finishes", b.getCommand(c.EventID), held)
		}},
		{"Missing", func(b *bundle) {
			for _, op := range holderOps(b) {
				_, err := op.fn(b.ids.Next(), "worker-a", 1, b.now)
				b.wantErr(op.name+" of an unknown command", err, store.ErrNotFound)
			}
		}},
	}
}

type holderOp struct {
	name string
	fn   func(eventID int64, worker string, attempt int, now time.Time) (store.Command, error)
}

// holderOps are the calls that require holding the current attempt.
func holderOps(b *bundle) []holderOp {
	return []holderOp{
		{"CommandStart", b.start},
		{"CommandHeartbeat", b.heartbeat},
		{"CommandFinish", func(id int64, w string, a int, now time.Time) (store.Command, error) {
			return b.finish(store.FinishParams{EventID: id, WorkerID: w, Attempt: a, Status: api.CmdCompleted, Result: jsonResult, Now: now})
		}},
	}
}
