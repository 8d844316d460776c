package storetest

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/store"
)

// benchWriteSet compares a transaction of n rows written one by one with
// the same rows as one set (go test -bench 'Hot/WriteSet' -benchmem):
// events-n is n events, append-n is n issued commands (an event, a
// command and an outbox row each, what a submit writes).
func benchWriteSet(b *testing.B, open func(b *testing.B) store.Driver) {
	for _, n := range []int{1, 16, 64, 256} {
		for _, kind := range []string{"events", "append"} {
			for _, mode := range []string{"rows", "set"} {
				b.Run(fmt.Sprintf("%s-%d/%s", kind, n, mode), func(b *testing.B) {
					h := newBenchHarness(b, open)
					cpu := cpuTime()
					for b.Loop() {
						w := h.writes(kind, n)
						h.do(b, func(ctx context.Context, tx store.Tx) error {
							if mode == "set" {
								return tx.WriteSet(ctx, &w)
							}
							return rowByRow(ctx, tx, &w)
						})
					}
					b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
					// This process's CPU time, which a loaded machine
					// disturbs far less than wall time (SQLite runs in
					// process; PostgreSQL's own work is not in it).
					b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
				})
			}
		}
	}
}

// writes is n rows of kind with fresh ids.
func (h *benchHarness) writes(kind string, n int) store.Writes {
	var w store.Writes
	for i := 0; i < n; i++ {
		id := h.ids.Next()
		cmdID := fmt.Sprintf("bench:step:%d", id)
		w.Events = append(w.Events, store.Event{EventID: id, ExecutionID: h.exec, EventType: api.EvCommandIssued, Step: "step",
			CommandID: cmdID, Status: string(api.CmdIssued), Attempt: 1, CreatedAt: h.now})
		if kind != "append" {
			continue
		}
		w.Commands = append(w.Commands, store.Command{EventID: id, ExecutionID: h.exec, CommandID: cmdID, Step: "step",
			Tool: []byte(`{"kind":"noop"}`), CreatedAt: h.now})
		w.Outbox = append(w.Outbox, store.OutboxMsg{ID: h.ids.Next(), EventID: id, Subject: "noetl.commands", MsgID: cmdID,
			Payload: []byte(`{"execution_id":1,"event_id":1,"command_id":"c","step":"step","server_url":"http://127.0.0.1:8082"}`), CreatedAt: h.now})
	}
	return w
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
