package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/millrace/millrace/internal/telemetry"
)

// BenchmarkHandler measures what the tracing middleware adds to one API
// request (a mux route that writes a small JSON body): off (no endpoint:
// the server serves the mux itself), a no-op provider (the wrapper's own
// cost), and on (the SDK with a batching in-memory exporter, as the OTLP
// exporter is fed).
func BenchmarkHandler(b *testing.B) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/executions/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"execution_id":42,"status":"completed"}`))
	})
	exp := tracetest.NewInMemoryExporter()
	on := telemetry.NewProvider(sdktrace.WithBatcher(exp))
	b.Cleanup(func() { _ = on.Shutdown(b.Context()) })
	for _, bc := range []struct {
		name string
		tr   trace.Tracer
	}{
		{"off", nil},
		{"noop", noop.NewTracerProvider().Tracer("bench")},
		{"on", on.Tracer("bench")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := telemetry.Handler(bc.tr, mux)
			req := httptest.NewRequest("GET", "/api/executions/42", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
				exp.Reset() // keep memory flat: the exporter only stands in for OTLP
			}
		})
	}
}
