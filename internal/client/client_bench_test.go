package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
)

// The worker's side of the hot routes: encode the request, send it, read
// and decode the reply. The server is a stub that drains the body and
// answers a canned reply of the real shape, so the figures are the
// client's (plus the stub's constant share). Run:
//
//	go test -run '^$' -bench Client -benchmem -count 5 ./internal/client/

const benchBatch = 16

func benchClaimed(i int) api.Claimed {
	t := time.Date(2026, 12, 5, 15, 0, 0, 123456000, time.UTC)
	lease := t.Add(30 * time.Second)
	return api.Claimed{Command: api.Command{
		EventID: 300000000000 + int64(i), ExecutionID: 200000000000 + int64(i), CommandID: fmt.Sprintf("%d:start:%d", 200000000000+i, 300000000000+i),
		Step: "start", Tool: json.RawMessage(`{"kind":"shell","command":"echo hello 42"}`), Input: json.RawMessage(`{"workload":{"greeting":"hello","n":42}}`),
		Status: api.CmdRunning, Attempt: 1, WorkerID: "bench-worker", LeaseExpires: &lease, Publishes: 1, PublishedAt: t, AvailableAt: t, CreatedAt: t, UpdatedAt: t,
	}, LeaseTTLMillis: 30000}
}

// stub answers every request with reply after reading the body whole.
func stub(b *testing.B, reply any) *Client {
	data, err := json.Marshal(reply)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	}))
	b.Cleanup(srv.Close)
	return New(srv.URL)
}

func BenchmarkClientClaimBatch(b *testing.B) {
	reply := api.ClaimBatch{Results: make([]api.ClaimResult, benchBatch)}
	items := make([]api.ClaimItem, benchBatch)
	for i := range reply.Results {
		c := benchClaimed(i)
		reply.Results[i].Claimed = &c
		items[i] = api.ClaimItem{EventID: c.EventID, ExecutionID: c.ExecutionID}
	}
	c := stub(b, reply)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		claims, errs, err := c.ClaimBatch(ctx, "bench-worker", true, items)
		if err != nil || errs[0] != nil || claims[benchBatch-1].EventID == 0 {
			b.Fatal(err, errs)
		}
	}
}

func BenchmarkClientReportBatch(b *testing.B) {
	reply := api.ReportBatch{Results: make([]api.ReportResult, benchBatch)}
	reps := make([]api.Report, benchBatch)
	for i := range reps {
		reply.Results[i] = api.ReportResult{EventID: 300000000000 + int64(i), Status: api.CmdCompleted}
		reps[i] = api.Report{EventType: api.EvCommandCompleted, EventID: 300000000000 + int64(i), ExecutionID: 200000000000 + int64(i),
			WorkerID: "bench-worker", Attempt: 1, Result: json.RawMessage(fmt.Sprintf(`{"stdout":"hello 42\n","exit_code":0,"i":%d}`, i))}
	}
	c := stub(b, reply)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		acks, errs, err := c.ReportBatch(ctx, reps)
		if err != nil || errs[0] != nil || acks[0].Status != api.CmdCompleted {
			b.Fatal(err, errs)
		}
	}
}

func BenchmarkClientExecute(b *testing.B) {
	c := stub(b, api.Started{ExecutionID: 200000000001, Status: api.ExecRunning})
	ctx := b.Context()
	payload := map[string]any{"n": 7, "who": "bench"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Execute(ctx, "bench/one", 0, payload); err != nil {
			b.Fatal(err)
		}
	}
}
