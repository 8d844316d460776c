package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/millrace/millrace/internal/api"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/store"
)

// The hot routes' own cost: each request goes through the real API handler
// (routing, auth context, body limit, decode, flow, encode) of a server on
// in-memory SQLite, with httptest and no sockets, so that what changes with
// the HTTP and JSON helpers shows. -benchmem counts the whole process: the
// relay publishing to the embedded NATS is in the figures too (the same in
// A and B). Run:
//
//	go test -run '^$' -bench HotRoute -benchmem -count 5 ./internal/server/

const benchBatch = 16 // a busy worker's claim and report batches

const benchOneStep = `apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: bench, path: bench/one}
workload: {greeting: hello, n: 42}
workflow:
  - step: start
    tool: {kind: shell, cmds: ["echo {{ workload.greeting }} {{ workload.n }}"]}
`

func benchHarness(b *testing.B) (*servertest.Harness, http.Handler) {
	b.Helper()
	h := servertest.Start(b, nil)
	if _, err := h.API.Register(b.Context(), benchOneStep); err != nil {
		b.Fatal(err)
	}
	return h, h.Srv.Handler()
}

func serve(b *testing.B, hd http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	hd.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
	return rec
}

// issue starts n executions and returns their first commands.
func issue(b *testing.B, h *servertest.Harness, n int) []api.ClaimItem {
	b.Helper()
	ctx := b.Context()
	items := make([]api.ClaimItem, n)
	for i := range items {
		ex, err := h.Srv.Flow().Execute(ctx, "bench/one", 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		cmds, err := store.ReadValue(ctx, h.Srv.Store(), func(q store.Querier) ([]store.Command, error) {
			return q.CommandListByExecution(ctx, ex.ExecutionID)
		})
		if err != nil || len(cmds) != 1 {
			b.Fatalf("commands of %d: %v, %v", ex.ExecutionID, cmds, err)
		}
		items[i] = api.ClaimItem{EventID: cmds[0].EventID, ExecutionID: ex.ExecutionID}
	}
	return items
}

func benchJSON(b *testing.B, v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkHotRouteExecute runs with the catalog cache on (the default
// TTL) and off (MILLRACE_CATALOG_CACHE_SECONDS=0: a catalog read per
// submit), to show what the cache saves.
func BenchmarkHotRouteExecute(b *testing.B) {
	for _, ttl := range []time.Duration{config.DefaultCatalogCacheTTL, 0} {
		b.Run(fmt.Sprintf("catalog_cache=%s", ttl), func(b *testing.B) {
			h := servertest.Start(b, func(c *config.Server) { c.CatalogCacheTTL = ttl })
			if _, err := h.API.Register(b.Context(), benchOneStep); err != nil {
				b.Fatal(err)
			}
			hd := h.Srv.Handler()
			body := benchJSON(b, api.ExecuteRequest{Path: "bench/one", Payload: map[string]any{"n": 7, "who": "bench"}})
			var bytesOut int
			b.ReportAllocs()
			for b.Loop() {
				bytesOut = serve(b, hd, "/api/execute", body).Body.Len()
			}
			b.ReportMetric(float64(bytesOut), "resp-B")
		})
	}
}

func BenchmarkHotRouteClaimBatch(b *testing.B) {
	h, hd := benchHarness(b)
	var bytesOut int
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		body := benchJSON(b, api.ClaimBatchRequest{WorkerID: "bench-worker", Start: true, Commands: issue(b, h, benchBatch)})
		b.StartTimer()
		rec := serve(b, hd, "/api/commands/claim", body)
		bytesOut = rec.Body.Len()
		b.StopTimer()
		var out api.ClaimBatch
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Results) != benchBatch || out.Results[0].Claimed == nil {
			b.Fatalf("claim batch reply: %v %s", err, rec.Body)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(bytesOut), "resp-B")
}

func BenchmarkHotRouteEventBatch(b *testing.B) {
	h, hd := benchHarness(b)
	ctx := b.Context()
	var bytesOut int
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		items := issue(b, h, benchBatch)
		reps := make([]api.Report, len(items))
		for j, it := range items {
			cl, err := h.Srv.Flow().ClaimAndStart(ctx, it.EventID, "bench-worker", it.ExecutionID, 0)
			if err != nil {
				b.Fatal(err)
			}
			reps[j] = api.Report{EventType: api.EvCommandCompleted, EventID: it.EventID, ExecutionID: it.ExecutionID, WorkerID: "bench-worker",
				Attempt: cl.Command.Attempt, Result: json.RawMessage(fmt.Sprintf(`{"stdout":"hello 42\n","exit_code":0,"i":%d}`, j))}
		}
		body := benchJSON(b, api.ReportBatchRequest{Events: reps})
		b.StartTimer()
		rec := serve(b, hd, "/api/events/batch", body)
		bytesOut = rec.Body.Len()
	}
	b.ReportMetric(float64(bytesOut), "resp-B")
}
