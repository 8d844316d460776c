package flow

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// The set-based forms of Claim and Apply, for a worker's batch: one store
// caller for the whole batch, one statement for its claims or completions
// (store.ManyTx), and each item its own answer, the one Claim or Apply
// would have given: a lost claim or a stale report never fails the others.

// ClaimRequest is one claim of a batch.
type ClaimRequest struct {
	EventID     int64
	ExecutionID int64 // the shard hint, as for Claim
	WorkerID    string
	TokenID     int64
	Start       bool // ClaimAndStart rather than Claim
}

// ClaimAnswer is one claim's answer: what Claim (or ClaimAndStart) returns.
type ClaimAnswer struct {
	Claimed Claimed
	Err     error
}

// ClaimMany claims reqs in one store caller with one claim statement, and
// records the winners' events. out[i] answers reqs[i]. Should the batch
// fail as a whole (the database, not a lost claim), each claim is tried on
// its own.
func (s *Service) ClaimMany(ctx context.Context, reqs []ClaimRequest) []ClaimAnswer {
	out := make([]ClaimAnswer, len(reqs))
	if len(reqs) == 0 {
		return out
	}
	var won []store.ClaimOutcome
	// A batch spans executions: the first one's shard, and the ordered
	// row locks plus the store's deadlock retry keep batches apart.
	err := s.st.Do(ctx, shardKey(reqs[0].ExecutionID, reqs[0].EventID), func(ctx context.Context, tx store.Tx) error {
		now := s.now()
		ps := make([]store.ClaimParams, len(reqs))
		for i, r := range reqs {
			ps[i] = store.ClaimParams{EventID: r.EventID, WorkerID: r.WorkerID, Now: now, LeaseTTL: s.cfg.LeaseTTL, TokenID: r.TokenID, Start: r.Start}
		}
		var err error
		if won, err = tx.CommandClaimMany(ctx, ps); err != nil {
			return err
		}
		for i, o := range won {
			if o.Err != nil {
				continue
			}
			if err := s.claimEvents(ctx, tx, o.Command, reqs[i].WorkerID, reqs[i].Start, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Warn("claim batch failed as a whole; claiming one by one", "claims", len(reqs), "err", err)
		each(len(reqs), func(i int) {
			r := reqs[i]
			out[i].Claimed, out[i].Err = s.claim(ctx, r.EventID, r.WorkerID, r.ExecutionID, r.TokenID, r.Start)
		})
		return out
	}
	for i, o := range won {
		out[i].Claimed, out[i].Err = s.claimAnswer(ctx, reqs[i].EventID, o.Command, o.Err)
	}
	return out
}

// AckAnswer is one report's answer: what Apply returns.
type AckAnswer struct {
	Ack Ack
	Err error
}

// ApplyMany applies reports: the completions and failures in one store
// caller (LockExecutions, one CommandFinishMany, then the engine per
// report), the rest (started, heartbeats) through Apply, as are the
// completions the set cannot take (no execution hint, a result stored as a
// blob, a command not found in the hinted execution). out[i] answers
// reps[i]. Should the set-based caller fail as a whole (an engine or
// database error), its reports go through Apply one by one, so one bad
// report never fails the others.
func (s *Service) ApplyMany(ctx context.Context, reps []Report) []AckAnswer {
	out := make([]AckAnswer, len(reps))
	var set, rows []int
	for i, r := range reps {
		if r.valid() == nil && r.ExecutionID > 0 && inline(r.Result) &&
			(r.EventType == api.EvCommandCompleted || r.EventType == api.EvCommandFailed) {
			set = append(set, i)
		} else {
			rows = append(rows, i)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		each(len(rows), func(k int) {
			i := rows[k]
			out[i].Ack, out[i].Err = s.Apply(ctx, reps[i])
		})
	}()
	if len(set) > 0 {
		s.applySet(ctx, reps, set, out)
	}
	wg.Wait()
	return out
}

// applySet applies reps[i] for i in set as one store caller.
func (s *Service) applySet(ctx context.Context, reps []Report, set []int, out []AckAnswer) {
	var answers map[int]AckAnswer
	issued := 0
	first := reps[set[0]]
	err := s.st.Do(ctx, shardKey(first.ExecutionID, first.EventID), func(ctx context.Context, tx store.Tx) error {
		answers, issued = make(map[int]AckAnswer, len(set)), 0
		now := s.now()
		execs := make([]int64, 0, len(set))
		for _, i := range set {
			execs = append(execs, reps[i].ExecutionID)
		}
		locked, err := tx.LockExecutions(ctx, execs)
		if err != nil {
			return err
		}
		// Reports of one execution depend on each other (the second sees
		// the run the first advanced): the first of each execution goes
		// in the set, the others one by one after it.
		var round, later []int
		seen := make(map[int64]bool, len(set))
		for _, i := range set {
			if ex := reps[i].ExecutionID; seen[ex] {
				later = append(later, i)
			} else {
				seen[ex] = true
				round = append(round, i)
			}
		}
		n, alone, err := s.finishSet(ctx, tx, reps, round, locked, answers, now)
		if err != nil {
			return err
		}
		issued += n
		for _, i := range append(alone, later...) {
			n, err := s.finishAlone(ctx, tx, reps[i], i, answers, now)
			if err != nil {
				return err
			}
			issued += n
		}
		return nil
	})
	if err != nil {
		s.log.Warn("report batch failed as a whole; applying one by one", "reports", len(set), "err", err)
		each(len(set), func(k int) {
			i := set[k]
			out[i].Ack, out[i].Err = s.Apply(ctx, reps[i])
		})
		return
	}
	for i, a := range answers {
		out[i] = a
	}
	if issued > 0 {
		s.wake()
	}
}

// pending is a report of the set, prepared and waiting for its command's
// finish.
type pending struct {
	i    int
	cur  store.Command
	exec store.Execution
	run  *run
	prep preparedFinish
}

// finishSet finishes reports of distinct, locked executions with one
// CommandFinishMany and advances their runs. It answers each report in
// answers, and returns the commands issued and the reports it left for
// finishAlone (their command is not in the hinted execution, or the
// execution is not running).
func (s *Service) finishSet(ctx context.Context, tx store.Tx, reps []Report, round []int, locked map[int64]store.Execution,
	answers map[int]AckAnswer, now time.Time) (issued int, alone []int, err error) {
	ready := make([]pending, 0, len(round))
	for _, i := range round {
		rep := reps[i]
		exec, ok := locked[rep.ExecutionID]
		if !ok || exec.Status != api.ExecRunning || exec.ParentCommandID != 0 {
			// A child's end may advance its parent (childEnded), which
			// must not race a run of that parent loaded for this set.
			alone = append(alone, i)
			continue
		}
		cur, r, ok, err := s.inRun(ctx, tx, exec, rep.EventID, now)
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			alone = append(alone, i)
			continue
		}
		p, err := s.prepareFinish(rep, cur, r)
		if err != nil {
			answers[i] = AckAnswer{Err: err} // refused before anything was written
			continue
		}
		if !inline(p.projectedResult) {
			alone = append(alone, i) // its result needs a blob, which only a finish that lands may write
			continue
		}
		ready = append(ready, pending{i: i, cur: cur, exec: exec, run: r, prep: p})
	}
	if len(ready) == 0 {
		return 0, alone, nil
	}
	ps := make([]store.FinishParams, len(ready))
	for k, p := range ready {
		ps[k] = p.prep.params(reps[p.i], p.prep.projectedResult, now)
	}
	outs, err := tx.CommandFinishMany(ctx, ps)
	if err != nil {
		return 0, nil, err
	}
	for k, p := range ready {
		rep := reps[p.i]
		if outs[k].Err != nil {
			answers[p.i] = AckAnswer{Err: rep.refused(outs[k].Err)}
			continue
		}
		f, err := s.afterFinish(ctx, tx, rep, p.prep, p.prep.projectedResult, outs[k].Command, p.exec, p.run, now)
		if err != nil {
			return 0, nil, err
		}
		if err := s.touchFinished(ctx, tx, f); err != nil {
			return 0, nil, err
		}
		answers[p.i] = AckAnswer{Ack: f.ack}
		issued += f.issued
	}
	return issued, alone, nil
}

// manySavepoint keeps a report finished on its own inside the batch's
// caller apart: refused, it leaves nothing behind.
const manySavepoint = "many_report"

// finishAlone is Apply's finish for one report inside the batch's caller,
// under a savepoint of its own. A refusal (the store's, or an invalid
// report) is the report's answer; any other error fails the caller.
func (s *Service) finishAlone(ctx context.Context, tx store.Tx, rep Report, i int, answers map[int]AckAnswer, now time.Time) (int, error) {
	if err := tx.Savepoint(ctx, manySavepoint); err != nil {
		return 0, err
	}
	ack, n, err := s.finish(ctx, tx, rep, now)
	if err == nil {
		answers[i] = AckAnswer{Ack: ack}
		return n, tx.Release(ctx, manySavepoint)
	}
	if !refusal(err) {
		return 0, err
	}
	answers[i] = AckAnswer{Err: rep.refused(err)}
	if rerr := tx.RollbackTo(ctx, manySavepoint); rerr != nil {
		return 0, rerr
	}
	return 0, tx.Release(ctx, manySavepoint)
}

// refusal reports whether err answers one report (the store refused it or
// the report is invalid) rather than failing the database or the engine.
func refusal(err error) bool {
	for _, kind := range []error{store.ErrNotFound, store.ErrConflict, store.ErrNotYours, ErrInvalid, ErrInvalidResult} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// each runs fn(i) for i in [0, n) concurrently and waits: the row path's
// callers then join one group commit.
func each(n int, fn func(i int)) {
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}
