package storetest

import (
	"fmt"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

func (b *bundle) opsStats(now time.Time) store.OpsStats {
	b.t.Helper()
	s, err := readDo(b, func(q store.Querier) (store.OpsStats, error) { return q.OpsStats(b.ctx(), now) })
	b.mustNil("OpsStats", err)
	return s
}

// wantOpsCounts compares the counters and maps of got with want.
func (b *bundle) wantOps(got, want store.OpsStats) {
	b.t.Helper()
	var d diff
	d.eq("OutboxDepth", got.OutboxDepth, want.OutboxDepth)
	d.timePtr("OutboxOldest", got.OutboxOldest, want.OutboxOldest)
	d.eq("CommandsUnclaimed", got.CommandsUnclaimed, want.CommandsUnclaimed)
	d.timePtr("UnclaimedOldest", got.UnclaimedOldest, want.UnclaimedOldest)
	d.eq("ExpiredLeases", got.ExpiredLeases, want.ExpiredLeases)
	d.timePtr("ExpiredOldest", got.ExpiredOldest, want.ExpiredOldest)
	d.eq("Executions", fmt.Sprint(got.Executions), fmt.Sprint(want.Executions))
	d.eq("QueriesQueued", fmt.Sprint(got.QueriesQueued), fmt.Sprint(want.QueriesQueued))
	if len(d) > 0 {
		b.fatalf("OpsStats: %v", d)
	}
}

func opsCases() []testCase {
	return []testCase{
		{"Empty", func(b *bundle) {
			b.wantOps(b.opsStats(b.now), store.NewOpsStats())
		}},
		{"DBClock", func(b *bundle) {
			before := time.Now()
			first, err := readDo(b, func(q store.Querier) (time.Time, error) { return q.DBClock(b.ctx()) })
			b.mustNil("DBClock", err)
			second, err := readDo(b, func(q store.Querier) (time.Time, error) { return q.DBClock(b.ctx()) })
			b.mustNil("DBClock", err)
			after := time.Now()
			// The database's clock, read at the call: a generous margin for
			// a test host's clock against the database server's.
			if first.Before(before.Add(-time.Minute)) || first.After(after.Add(time.Minute)) {
				b.fatalf("DBClock = %s, want about %s", first, before)
			}
			if first.Location() != time.UTC {
				b.fatalf("DBClock location = %s, want UTC", first.Location())
			}
			// The clock at each call, not a transaction's start or a cache.
			if !second.After(first) {
				b.fatalf("DBClock twice: %s then %s, want the second later", first, second)
			}
		}},
		{"Counts", func(b *bundle) {
			now := b.now
			e := b.addExecution()
			b.addExecution()
			b.finishExecution(b.addExecution().ExecutionID, api.ExecCompleted)
			b.finishExecution(b.addExecution().ExecutionID, api.ExecFailed)

			// Issued: two available (the older counts for the age), one
			// retry still in its backoff (counted, not late).
			old := b.addCommand(e.ExecutionID, now.Add(-3*time.Minute))
			b.addCommand(e.ExecutionID, now.Add(-time.Minute))
			retry := b.newCommand(e.ExecutionID, now.Add(-5*time.Minute))
			retry.AvailableAt = now.Add(time.Minute)
			b.mustWrite("CommandInsert retry", func(tx store.Tx) error { return tx.CommandInsert(b.ctx(), retry) })
			// Leases: claimed 3 minutes ago (expired 2 minutes ago),
			// running since 90 s ago (expired 30 s ago), one live.
			expired := b.mustClaim(b.addCommand(e.ExecutionID, now.Add(-4*time.Minute)).EventID, "w1", now.Add(-3*time.Minute))
			r := b.mustClaim(b.addCommand(e.ExecutionID, now.Add(-2*time.Minute)).EventID, "w2", now.Add(-90*time.Second))
			_, err := b.start(r.EventID, "w2", 1, now.Add(-90*time.Second))
			b.mustNil("CommandStart", err)
			b.mustClaim(b.addCommand(e.ExecutionID, now).EventID, "w3", now)
			// A finished command with an old lease is not an expired lease.
			done := b.mustClaim(b.addCommand(e.ExecutionID, now.Add(-time.Hour)).EventID, "w4", now.Add(-time.Hour))
			_, err = b.finish(completeParams(done, now.Add(-time.Hour)))
			b.mustNil("CommandFinish", err)

			// Every command's notification went out but the retry's, due
			// in a minute: pending, counted, not late.
			for _, c := range b.listCommands(e.ExecutionID) {
				if c.EventID != retry.EventID {
					b.published(c.EventID)
				}
			}
			// Outbox: one due 2 minutes ago, one deferred.
			o1 := b.newOutbox(old.EventID)
			o1.CreatedAt = now.Add(-2 * time.Minute)
			o2 := b.newOutbox(old.EventID)
			o2.AvailableAt = now.Add(time.Minute)
			b.addOutbox(o1, o2)

			p := b.mustPutProject(b.newProject("ops"))
			for _, q := range []struct {
				lane, target string
				status       api.QueryStatus
			}{
				{"interactive", "", api.QueryQueued},
				{"interactive", "warehouse", api.QueryQueued},
				{"background", "", api.QueryQueued},
				{"interactive", "preagg", api.QueryQueued},
				{"background", "", api.QueryExecuting},
				{"interactive", "", api.QueryReady},
			} {
				row := b.newQuery(p.ProjectID, now)
				row.Lane, row.Target, row.Status = q.lane, q.target, q.status
				b.addQuery(row)
			}

			want := store.NewOpsStats()
			want.OutboxDepth, want.OutboxOldest = 3, ptr(now.Add(-2*time.Minute))
			want.CommandsUnclaimed, want.UnclaimedOldest = 3, ptr(now.Add(-3*time.Minute))
			want.ExpiredLeases, want.ExpiredOldest = 2, expired.LeaseExpires
			want.Executions[api.ExecRunning] = 2
			want.QueriesQueued["interactive"], want.QueriesQueued["background"], want.QueriesQueued[store.QueueLanePreAgg] = 2, 1, 1
			b.wantOps(b.opsStats(now), want)

			// Only deferred rows: nothing is due, so no age.
			b.mustWrite("OutboxDelete", func(tx store.Tx) error { return tx.OutboxDelete(b.ctx(), []int64{o1.ID}) })
			got := b.opsStats(now)
			if got.OutboxDepth != 2 || got.OutboxOldest != nil {
				b.fatalf("OpsStats with only a deferred outbox row and a deferred command notification: depth %d, oldest %v; want 2, nil",
					got.OutboxDepth, fmtTimePtr(got.OutboxOldest))
			}
			// A command notification due 4 minutes ago is the oldest.
			b.addCommand(e.ExecutionID, now.Add(-4*time.Minute))
			got = b.opsStats(now)
			if got.OutboxDepth != 3 || got.OutboxOldest == nil || !got.OutboxOldest.Equal(now.Add(-4*time.Minute)) {
				b.fatalf("OpsStats with a command notification due 4 minutes ago: depth %d, oldest %v; want 3, %s",
					got.OutboxDepth, fmtTimePtr(got.OutboxOldest), now.Add(-4*time.Minute).Format(time.RFC3339Nano))
			}
		}},
	}
}
