package storetest

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/ids"
	"github.com/millrace/millrace/internal/store"
)

// Bench runs the write path's hot statements against a driver, so both
// drivers are measured by the same code (go test -bench Hot ./internal/store/...):
//
//   - Append: what issuing a command writes (command.issued event, command
//     row, outbox row), one transaction per command;
//   - ClaimStart: a claim that also starts the command, with its two events;
//   - Finish: the holder's completion with its event;
//   - AppendGroup16: Append from 16 concurrent callers through store.Store,
//     which group-commits them;
//   - WriteSet: n rows one by one against the same rows as one set (setbench.go).
func Bench(b *testing.B, open func(b *testing.B) store.Driver) {
	b.Run("Append", func(b *testing.B) {
		h := newBenchHarness(b, open)
		for b.Loop() {
			h.do(b, func(ctx context.Context, tx store.Tx) error { return h.append(ctx, tx, h.ids.Next()) })
		}
	})
	b.Run("ClaimStart", func(b *testing.B) {
		h := newBenchHarness(b, open)
		cmds := h.issue(b, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			h.do(b, func(ctx context.Context, tx store.Tx) error { return h.claim(ctx, tx, cmds[i]) })
		}
	})
	b.Run("Finish", func(b *testing.B) {
		h := newBenchHarness(b, open)
		cmds := h.issue(b, b.N)
		for _, id := range cmds {
			h.do(b, func(ctx context.Context, tx store.Tx) error { return h.claim(ctx, tx, id) })
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			h.do(b, func(ctx context.Context, tx store.Tx) error {
				c, err := tx.CommandFinish(ctx, store.FinishParams{EventID: cmds[i], WorkerID: "w", Attempt: 1,
					Status: api.CmdCompleted, Result: []byte(`{"ok":true}`), Now: h.now})
				if err != nil {
					return err
				}
				return tx.EventInsert(ctx, store.Event{EventID: h.ids.Next(), ExecutionID: c.ExecutionID, EventType: api.EvCommandCompleted,
					Step: c.Step, CommandID: c.CommandID, Status: string(api.CmdCompleted), Result: c.Result, WorkerID: "w", Attempt: 1, CreatedAt: h.now})
			})
		}
	})
	b.Run("AppendGroup16", func(b *testing.B) {
		h := newBenchHarness(b, open)
		st := store.New(h.drv, store.Options{})
		b.Cleanup(func() { _ = st.Close() })
		b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			ctx := b.Context()
			for pb.Next() {
				id := h.ids.Next()
				if err := st.Do(ctx, 1, func(ctx context.Context, tx store.Tx) error { return h.append(ctx, tx, id) }); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("WriteSet", func(b *testing.B) { benchWriteSet(b, open) })
}

type benchHarness struct {
	drv  store.Driver
	ids  *ids.Generator
	now  time.Time
	exec int64
}

func newBenchHarness(b *testing.B, open func(b *testing.B) store.Driver) *benchHarness {
	h := &benchHarness{drv: open(b), ids: ids.New(-1), now: time.Now().UTC().Truncate(time.Microsecond)}
	h.exec = h.ids.Next()
	h.do(b, func(ctx context.Context, tx store.Tx) error {
		return tx.ExecutionInsert(ctx, store.Execution{ExecutionID: h.exec, Path: "bench", Version: 1, Status: api.ExecRunning, StartedAt: h.now})
	})
	return h
}

// do runs fn in its own transaction, as a lone caller of the group commit
// does.
func (h *benchHarness) do(b *testing.B, fn func(ctx context.Context, tx store.Tx) error) {
	ctx := b.Context()
	tx, err := h.drv.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback(ctx)
		b.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
}

func (h *benchHarness) append(ctx context.Context, tx store.Tx, id int64) error {
	cmdID := "bench:step:" + strconv.FormatInt(id, 10)
	if err := tx.EventInsert(ctx, store.Event{EventID: id, ExecutionID: h.exec, EventType: api.EvCommandIssued, Step: "step",
		CommandID: cmdID, Status: string(api.CmdIssued), Attempt: 1, CreatedAt: h.now}); err != nil {
		return err
	}
	if err := tx.CommandInsert(ctx, store.Command{EventID: id, ExecutionID: h.exec, CommandID: cmdID, Step: "step",
		Tool: []byte(`{"kind":"noop"}`), CreatedAt: h.now}); err != nil {
		return err
	}
	return tx.OutboxInsert(ctx, store.OutboxMsg{ID: h.ids.Next(), EventID: id, Subject: "noetl.commands", MsgID: cmdID,
		Payload: []byte(`{"execution_id":1,"event_id":1,"command_id":"c","step":"step","server_url":"http://127.0.0.1:8082"}`), CreatedAt: h.now})
}

func (h *benchHarness) claim(ctx context.Context, tx store.Tx, id int64) error {
	c, err := tx.CommandClaim(ctx, store.ClaimParams{EventID: id, WorkerID: "w", Now: h.now, LeaseTTL: time.Minute, Start: true})
	if err != nil {
		return err
	}
	for _, typ := range []string{api.EvCommandClaimed, api.EvCommandStarted} {
		if err := tx.EventInsert(ctx, store.Event{EventID: h.ids.Next(), ExecutionID: c.ExecutionID, EventType: typ,
			Step: c.Step, CommandID: c.CommandID, Status: string(c.Status), WorkerID: "w", Attempt: c.Attempt, CreatedAt: h.now}); err != nil {
			return err
		}
	}
	return nil
}

// issue appends n commands outside the timed part.
func (h *benchHarness) issue(b *testing.B, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = h.ids.Next()
		h.do(b, func(ctx context.Context, tx store.Tx) error { return h.append(ctx, tx, out[i]) })
	}
	return out
}
