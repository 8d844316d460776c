package storetest

import (
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// Claims bound to the worker token that made them (issue 12): a claim
// records claim_token_id; while it is not 0, the holder's worker and
// attempt with another token are refused with ErrNotYours and change
// nothing.

func (b *bundle) claimWithToken(eventID int64, worker string, token int64, now time.Time) (store.Command, error) {
	return txDo(b, func(tx store.Tx) (store.Command, error) {
		return tx.CommandClaim(b.ctx(), store.ClaimParams{EventID: eventID, WorkerID: worker, Now: now, LeaseTTL: leaseTTL, TokenID: token})
	})
}

// tokenOps are the holder operations with a token.
func tokenOps(b *bundle) []struct {
	name string
	fn   func(eventID int64, worker string, attempt int, token int64, now time.Time) (store.Command, error)
} {
	return []struct {
		name string
		fn   func(eventID int64, worker string, attempt int, token int64, now time.Time) (store.Command, error)
	}{
		{"CommandStart", func(id int64, w string, a int, tok int64, now time.Time) (store.Command, error) {
			return txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandStart(b.ctx(), id, w, a, tok, now, leaseTTL)
			})
		}},
		{"CommandHeartbeat", func(id int64, w string, a int, tok int64, now time.Time) (store.Command, error) {
			return txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandHeartbeat(b.ctx(), id, w, a, tok, now, leaseTTL)
			})
		}},
		{"CommandFinish", func(id int64, w string, a int, tok int64, now time.Time) (store.Command, error) {
			return txDo(b, func(tx store.Tx) (store.Command, error) {
				return tx.CommandFinish(b.ctx(), store.FinishParams{EventID: id, WorkerID: w, Attempt: a, TokenID: tok,
					Status: api.CmdCompleted, Result: jsonResult, Now: now})
			})
		}},
	}
}

func claimTokenCases() []testCase {
	return []testCase{
		{"ClaimRecordsToken", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			if c.ClaimTokenID != 0 {
				b.fatalf("issued command ClaimTokenID = %d, want 0", c.ClaimTokenID)
			}
			got, err := b.claimWithToken(c.EventID, "worker-a", 7, b.now)
			b.mustNil("CommandClaim with token 7", err)
			if got.ClaimTokenID != 7 {
				b.fatalf("claim result ClaimTokenID = %d, want 7", got.ClaimTokenID)
			}
			b.wantCommand("command after the claim", b.getCommand(c.EventID), got)
			// A re-claim after the lease expired records the new token, and
			// a claim without a token records 0.
			later := got.LeaseExpires.Add(time.Second)
			again, err := b.claimWithToken(c.EventID, "worker-b", 9, later)
			b.mustNil("re-claim with token 9", err)
			if again.ClaimTokenID != 9 || b.getCommand(c.EventID).ClaimTokenID != 9 {
				b.fatalf("re-claim ClaimTokenID = %d, want 9", again.ClaimTokenID)
			}
			open, err := b.claimWithToken(c.EventID, "worker-c", 0, again.LeaseExpires.Add(time.Second))
			b.mustNil("re-claim without a token", err)
			if open.ClaimTokenID != 0 {
				b.fatalf("claim without a token ClaimTokenID = %d, want 0", open.ClaimTokenID)
			}
		}},
		{"OtherTokenRefused", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			held, err := b.claimWithToken(c.EventID, "worker-a", 7, b.now)
			b.mustNil("CommandClaim with token 7", err)
			at := b.now.Add(time.Second)
			for _, op := range tokenOps(b) {
				for _, tok := range []int64{9, 0} {
					_, err := op.fn(c.EventID, "worker-a", 1, tok, at)
					b.wantErr(op.name+" with the holder's worker and attempt but another token", err, store.ErrNotYours)
				}
			}
			b.wantCommand("command after refused calls (the holder keeps its lease)", b.getCommand(c.EventID), held)
			// A caller that is not even the holder gets the ordinary conflict.
			for _, op := range tokenOps(b) {
				_, err := op.fn(c.EventID, "worker-b", 1, 9, at)
				b.wantErr(op.name+" by another worker with another token", err, store.ErrConflict)
				_, err = op.fn(c.EventID, "worker-a", 2, 9, at)
				b.wantErr(op.name+" with a wrong attempt and another token", err, store.ErrConflict)
			}
			// The token that claimed may.
			_, err = tokenOps(b)[1].fn(c.EventID, "worker-a", 1, 7, at)
			b.mustNil("CommandHeartbeat with the claim's token", err)
			_, err = tokenOps(b)[0].fn(c.EventID, "worker-a", 1, 7, at)
			b.mustNil("CommandStart with the claim's token", err)
			got, err := tokenOps(b)[2].fn(c.EventID, "worker-a", 1, 7, at)
			b.mustNil("CommandFinish with the claim's token", err)
			if got.Status != api.CmdCompleted || got.ClaimTokenID != 7 {
				b.fatalf("after finish: status %s, ClaimTokenID %d; want completed, 7", got.Status, got.ClaimTokenID)
			}
			// Ended: another token gets a conflict, not ErrNotYours.
			_, err = tokenOps(b)[1].fn(c.EventID, "worker-a", 1, 9, at)
			b.wantErr("CommandHeartbeat of an ended command with another token", err, store.ErrConflict)
		}},
		{"StaleTokenAfterReclaimIsConflict", func(b *bundle) {
			// A worker whose lease was lost and re-claimed with another
			// token gets the lost-lease conflict for its old attempt.
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			a, err := b.claimWithToken(c.EventID, "worker-a", 7, b.now)
			b.mustNil("claim by worker-a", err)
			t2 := a.LeaseExpires.Add(time.Second)
			_, err = b.claimWithToken(c.EventID, "worker-b", 9, t2)
			b.mustNil("re-claim by worker-b", err)
			for _, op := range tokenOps(b) {
				_, err := op.fn(c.EventID, "worker-a", 1, 7, t2)
				b.wantErr(op.name+" by the old holder with its own token", err, store.ErrConflict)
			}
		}},
		{"ClaimWithoutTokenAcceptsAny", func(b *bundle) {
			e := b.addExecution()
			c := b.addCommand(e.ExecutionID, b.now)
			_, err := b.claimWithToken(c.EventID, "worker-a", 0, b.now)
			b.mustNil("claim without a token", err)
			_, err = tokenOps(b)[1].fn(c.EventID, "worker-a", 1, 9, b.now)
			b.mustNil("heartbeat with a token on a claim made without one", err)
		}},
		{"QueryAndBuildRecordToken", func(b *bundle) {
			q := b.addQuery(b.newQuery(b.ids.Next(), b.now))
			if q.ClaimTokenID != 0 {
				b.fatalf("new query ClaimTokenID = %d, want 0", q.ClaimTokenID)
			}
			_, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryPending}, api.QueryQueued, store.QueryUpdate{}, b.now)
			b.mustNil("query to queued", err)
			worker, tok := "worker-a", int64(7)
			got, err := b.transition(q.QueryUUID, []api.QueryStatus{api.QueryQueued}, api.QueryExecuting,
				store.QueryUpdate{WorkerID: &worker, ClaimTokenID: &tok}, b.now)
			b.mustNil("query claim with token 7", err)
			if got.ClaimTokenID != 7 {
				b.fatalf("claimed query ClaimTokenID = %d, want 7", got.ClaimTokenID)
			}
			b.wantQuery("query after the claim", b.getQuery(q.QueryUUID), got)
			// A transition that does not name the token keeps it.
			got, err = b.transition(q.QueryUUID, []api.QueryStatus{api.QueryExecuting}, api.QueryExecuting,
				store.QueryUpdate{PublishedAt: ptr(b.now)}, b.now)
			b.mustNil("query heartbeat", err)
			if got.ClaimTokenID != 7 {
				b.fatalf("query ClaimTokenID after a heartbeat = %d, want 7", got.ClaimTokenID)
			}
			withTok := b.newQuery(b.ids.Next(), b.now)
			withTok.ClaimTokenID = 5
			if got := b.addQuery(withTok); got.ClaimTokenID != 5 {
				b.fatalf("inserted query ClaimTokenID = %d, want 5", got.ClaimTokenID)
			}

			bd := b.addBuild(b.newBuild(b.ids.Next(), "orders", "daily", b.now))
			if bd.ClaimTokenID != 0 {
				b.fatalf("new build ClaimTokenID = %d, want 0", bd.ClaimTokenID)
			}
			gb, err := b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildQueued}, api.BuildBuilding,
				store.BuildUpdate{WorkerID: &worker, ClaimTokenID: &tok, StartedAt: ptr(b.now)}, b.now)
			b.mustNil("build claim with token 7", err)
			if gb.ClaimTokenID != 7 {
				b.fatalf("claimed build ClaimTokenID = %d, want 7", gb.ClaimTokenID)
			}
			b.wantBuild("build after the claim", b.getBuild(bd.BuildUUID), gb)
			gb, err = b.buildTransition(bd.BuildUUID, []api.BuildStatus{api.BuildBuilding}, api.BuildBuilding,
				store.BuildUpdate{PublishedAt: ptr(b.now)}, b.now)
			b.mustNil("build heartbeat", err)
			if gb.ClaimTokenID != 7 {
				b.fatalf("build ClaimTokenID after a heartbeat = %d, want 7", gb.ClaimTokenID)
			}
			gb, err = b.promote(bd.BuildUUID, store.BuildUpdate{EndedAt: ptr(b.now)}, b.now)
			b.mustNil("promote", err)
			if gb.Status != api.BuildActive || gb.ClaimTokenID != 7 {
				b.fatalf("promoted build: status %s, ClaimTokenID %d; want active, 7", gb.Status, gb.ClaimTokenID)
			}
		}},
	}
}
