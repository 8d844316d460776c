package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// manyBatch is how many rows one benchmark operation claims or finishes:
// what a busy worker's claim or report batch carries.
const manyBatch = 64

// BenchMany compares the set-based claims and completions with the row
// methods, one transaction of manyBatch rows per operation (ns/op is per
// batch; ns/row divides by manyBatch):
//
//	go test -run '^$' -bench 'Many' -benchmem ./internal/store/pgdriver/ ./internal/store/sqlitedriver/
func BenchMany(b *testing.B, open func(b *testing.B) store.Driver) {
	claims := func(ids []int64, now time.Time) []store.ClaimParams {
		ps := make([]store.ClaimParams, len(ids))
		for i, id := range ids {
			ps[i] = store.ClaimParams{EventID: id, WorkerID: "w", Now: now, LeaseTTL: time.Minute, Start: true}
		}
		return ps
	}
	finishes := func(ids []int64, now time.Time) []store.FinishParams {
		ps := make([]store.FinishParams, len(ids))
		for i, id := range ids {
			ps[i] = store.FinishParams{EventID: id, WorkerID: "w", Attempt: 1, Status: api.CmdCompleted, Result: []byte(`{"ok":true}`), Now: now}
		}
		return ps
	}
	claimMany := func(ctx context.Context, tx store.Tx, ps []store.ClaimParams) error {
		out, err := tx.CommandClaimMany(ctx, ps)
		for _, o := range out {
			err = errorsJoin(err, o.Err)
		}
		return err
	}
	claimRows := func(ctx context.Context, tx store.Tx, ps []store.ClaimParams) error {
		for _, p := range ps {
			if _, err := tx.CommandClaim(ctx, p); err != nil {
				return err
			}
		}
		return nil
	}
	finishMany := func(ctx context.Context, tx store.Tx, ps []store.FinishParams) error {
		out, err := tx.CommandFinishMany(ctx, ps)
		for _, o := range out {
			err = errorsJoin(err, o.Err)
		}
		return err
	}
	finishRows := func(ctx context.Context, tx store.Tx, ps []store.FinishParams) error {
		for _, p := range ps {
			if _, err := tx.CommandFinish(ctx, p); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range []struct {
		name string
		fn   func(ctx context.Context, tx store.Tx, ps []store.ClaimParams) error
	}{{"Many", claimMany}, {"Rows", claimRows}} {
		b.Run("Claim/"+c.name, func(b *testing.B) {
			h := newBenchHarness(b, open)
			batches := h.issueBatches(b, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.do(b, func(ctx context.Context, tx store.Tx) error { return c.fn(ctx, tx, claims(batches[i], h.now)) })
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*manyBatch), "ns/row")
		})
	}
	for _, c := range []struct {
		name string
		fn   func(ctx context.Context, tx store.Tx, ps []store.FinishParams) error
	}{{"Many", finishMany}, {"Rows", finishRows}} {
		b.Run("Finish/"+c.name, func(b *testing.B) {
			h := newBenchHarness(b, open)
			batches := h.issueBatches(b, b.N)
			for _, ids := range batches {
				h.do(b, func(ctx context.Context, tx store.Tx) error { return claimMany(ctx, tx, claims(ids, h.now)) })
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.do(b, func(ctx context.Context, tx store.Tx) error { return c.fn(ctx, tx, finishes(batches[i], h.now)) })
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*manyBatch), "ns/row")
		})
	}
}

// issueBatches appends n batches of manyBatch commands, one transaction a
// batch, outside the timed part.
func (h *benchHarness) issueBatches(b *testing.B, n int) [][]int64 {
	out := make([][]int64, n)
	for i := range out {
		out[i] = make([]int64, manyBatch)
		h.do(b, func(ctx context.Context, tx store.Tx) error {
			for j := range out[i] {
				out[i][j] = h.ids.Next()
				if err := h.append(ctx, tx, out[i][j]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return out
}

// errorsJoin keeps the first error: a refused row fails the benchmark.
func errorsJoin(err, rowErr error) error {
	if err != nil {
		return err
	}
	return rowErr
}
