package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// discardWriter is a ResponseWriter that keeps nothing, so that only
// writeJSON's own cost shows.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkWriteJSONClaimBatch encodes a claim batch reply of 16 commands,
// the largest hot-route reply.
//
//	go test -run '^$' -bench WriteJSON -benchmem -count 5 ./internal/server/
func BenchmarkWriteJSONClaimBatch(b *testing.B) {
	t := time.Date(2026, 12, 5, 15, 0, 0, 123456000, time.UTC)
	lease := t.Add(30 * time.Second)
	reply := api.ClaimBatch{Results: make([]api.ClaimResult, 16)}
	for i := range reply.Results {
		reply.Results[i].Claimed = &api.Claimed{Command: api.Command{
			EventID: 300000000000 + int64(i), ExecutionID: 200000000000 + int64(i), CommandID: fmt.Sprintf("%d:start:%d", 200000000000+i, 300000000000+i),
			Step: "start", Tool: json.RawMessage(`{"kind":"shell","cmds":["echo hello 42"]}`), Input: json.RawMessage(`{"workload":{"greeting":"hello","n":42}}`),
			Status: api.CmdRunning, Attempt: 1, WorkerID: "bench-worker", LeaseExpires: &lease, Publishes: 1, PublishedAt: t, AvailableAt: t, CreatedAt: t, UpdatedAt: t,
		}, LeaseTTLMillis: 30000}
	}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		writeJSON(w, http.StatusOK, reply)
	}
}
