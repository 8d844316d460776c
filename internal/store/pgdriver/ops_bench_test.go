package pgdriver_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/store"
	"github.com/millrace/millrace/internal/store/pgdriver/pgtest"
)

// BenchmarkOpsStats is the store half of one monitor sample (every server,
// every MILLRACE_METRICS_INTERVAL_SECONDS) over a history of finished work
// and a small live set: its cost must follow the live set, not the history.
//
//	go test -run '^$' -bench OpsStats -benchtime 200x ./internal/store/pgdriver/
func BenchmarkOpsStats(b *testing.B) {
	for _, history := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			d := pgtest.Open(b)
			ctx := b.Context()
			now := time.Now().UTC()
			// Finished executions and their completed commands, plus 1,000
			// running executions with one issued command each.
			for _, q := range []string{
				`INSERT INTO executions (execution_id, catalog_id, path, version, status, started_at, ended_at)
				 SELECT g, 1, 'bench', 1, CASE WHEN g <= $1 THEN 'completed' ELSE 'running' END, $2::timestamptz, CASE WHEN g <= $1 THEN $2::timestamptz END
				 FROM generate_series(1, $1 + 1000) g`,
				`INSERT INTO commands (event_id, execution_id, command_id, step, status, published_at, created_at, updated_at, available_at)
				 SELECT g, g, g::text || ':s', 's', CASE WHEN g <= $1 THEN 'completed' ELSE 'issued' END, $2, $2, $2, $2
				 FROM generate_series(1, $1 + 1000) g`,
			} {
				if _, err := d.Pool().Exec(ctx, q, history, now); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := d.Pool().Exec(ctx, `ANALYZE`); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				err := d.Read(ctx, func(q store.Querier) error {
					s, err := q.OpsStats(ctx, now)
					if err == nil && s.CommandsUnclaimed != 1000 {
						err = fmt.Errorf("unclaimed = %d, want 1000", s.CommandsUnclaimed)
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
