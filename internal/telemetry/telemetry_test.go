package telemetry_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/telemetry"
)

func TestOffWithoutEndpointOrWithExporterNone(t *testing.T) {
	t.Parallel()
	for _, cfg := range []config.Telemetry{
		{Exporter: "otlp"},
		{Exporter: "none", Endpoint: "http://127.0.0.1:4318"},
		{Exporter: "NONE", TracesEndpoint: "http://127.0.0.1:4318/v1/traces"},
	} {
		p, err := telemetry.Setup(t.Context(), cfg, "", nil)
		if err != nil || p != nil {
			t.Errorf("Setup(%+v) = %v, %v; want nil, nil (tracing off)", cfg, p, err)
		}
		if tr := p.Tracer("x"); tr != nil {
			t.Errorf("a nil provider's Tracer = %v, want nil", tr)
		}
		if err := p.Shutdown(t.Context()); err != nil {
			t.Errorf("a nil provider's Shutdown: %v", err)
		}
	}
	// Off adds nothing to a request's path: the handler and transport are
	// the ones given.
	mux := http.NewServeMux()
	if h := telemetry.Handler(nil, mux); h != http.Handler(mux) {
		t.Errorf("Handler(nil, mux) = %T, want the mux itself", h)
	}
	rt := http.DefaultTransport
	if got := telemetry.Transport(nil, rt); got != rt {
		t.Errorf("Transport(nil, rt) = %T, want rt itself", got)
	}
}

func TestSetupRejectsBadSettings(t *testing.T) {
	t.Parallel()
	base := config.Telemetry{Exporter: "otlp", Endpoint: "http://127.0.0.1:4318", Protocol: "http/protobuf", Sampler: "always_on"}
	for _, tc := range []struct {
		mod  func(*config.Telemetry)
		want string
	}{
		{func(c *config.Telemetry) { c.Protocol = "thrift" }, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{func(c *config.Telemetry) { c.Exporter = "zipkin" }, "OTEL_TRACES_EXPORTER"},
		{func(c *config.Telemetry) { c.Sampler = "sometimes" }, "OTEL_TRACES_SAMPLER"},
		{func(c *config.Telemetry) { c.Sampler, c.SamplerArg = "traceidratio", "2" }, "OTEL_TRACES_SAMPLER_ARG"},
	} {
		cfg := base
		tc.mod(&cfg)
		p, err := telemetry.Setup(t.Context(), cfg, "", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Setup(%+v) error = %v, want one naming %s", cfg, err, tc.want)
		}
		_ = p.Shutdown(t.Context())
	}
	for _, proto := range []string{"http/protobuf", "http/json", "grpc"} {
		cfg := base
		cfg.Protocol = proto
		p, err := telemetry.Setup(t.Context(), cfg, "i-1", nil)
		if err != nil || p == nil {
			t.Errorf("Setup with protocol %s = %v, %v; want a provider", proto, p, err)
		}
		_ = p.Shutdown(context.Background()) // nothing was recorded: nothing to send
	}
}

// An operator can tell tracing is on from the log, which never shows the
// endpoint's credentials.
func TestSetupLogsWhereSpansGo(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	cfg := config.Telemetry{Exporter: "otlp", Endpoint: "http://collector:s3cret@127.0.0.1:4318", Protocol: "http/protobuf",
		Sampler: "parentbased_traceidratio", SamplerArg: "0.25", ServiceName: "millrace-server"}
	p, err := telemetry.Setup(t.Context(), cfg, "", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || p == nil {
		t.Fatalf("Setup = %v, %v; want a provider", p, err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	out := logs.String()
	for _, want := range []string{"tracing on", "127.0.0.1:4318", "parentbased_traceidratio", "0.25", "millrace-server"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("log shows the endpoint's password: %s", out)
	}
}

// recorded is a provider that keeps every ended span in memory.
func recorded() (*telemetry.Provider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	return telemetry.NewProvider(sdktrace.WithSyncer(exp)), exp
}

func TestHandlerSpanIsNamedByRouteAndChildOfTheCaller(t *testing.T) {
	t.Parallel()
	p, exp := recorded()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/executions/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !trace.SpanContextFromContext(r.Context()).IsValid() {
			t.Error("the handler's context carries no span")
		}
		_, _ = w.Write([]byte("{}"))
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	h := telemetry.Handler(p.Tracer("test"), mux)

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := httptest.NewRequest("GET", "/api/executions/42", nil)
	r.Header.Set("traceparent", parent)
	h.ServeHTTP(httptest.NewRecorder(), r)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/fail", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/nowhere", nil))

	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	get := spans[0]
	if get.Name != "GET /api/executions/{id}" || get.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want server span GET /api/executions/{id}", get.Name, get.SpanKind)
	}
	if got := get.Parent.TraceID().String() + "-" + get.Parent.SpanID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7" {
		t.Errorf("parent %s, want the caller's traceparent", got)
	}
	if !hasAttr(get.Attributes, attribute.Int("http.response.status_code", 200)) || !hasAttr(get.Attributes, attribute.String("http.route", "/api/executions/{id}")) {
		t.Errorf("attributes %v lack status 200 or the route", get.Attributes)
	}
	if fail := spans[1]; fail.Name != "POST /fail" || fail.Status.Code != codes.Error {
		t.Errorf("span %q status %v, want POST /fail marked as an error", fail.Name, fail.Status)
	}
	if none := spans[2]; none.Name != "GET" {
		t.Errorf("an unmatched request's span is %q, want just the method", none.Name)
	}
}

func TestTransportSendsItsSpanAsTraceparent(t *testing.T) {
	t.Parallel()
	p, exp := recorded()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("traceparent") }))
	defer srv.Close()
	c := &http.Client{Transport: telemetry.Transport(p.Tracer("test"), http.DefaultTransport)}
	ctx, parent := p.Tracer("test").Start(t.Context(), "job")
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/api/commands/417093386881359872/release", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()
	if req.Header.Get("traceparent") != "" {
		t.Error("the transport changed the caller's request")
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the client span and its parent", len(spans))
	}
	cs := spans[0]
	if cs.Name != "POST /api/commands/{id}/release" || cs.SpanKind != trace.SpanKindClient || cs.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("client span %q kind %v parent %s; want POST /api/commands/{id}/release, client, child of job", cs.Name, cs.SpanKind, cs.Parent.SpanID())
	}
	if want := "00-" + cs.SpanContext.TraceID().String() + "-" + cs.SpanContext.SpanID().String() + "-01"; <-got != want {
		t.Errorf("the server got another traceparent than the client span's %s", want)
	}
}

func TestTraceParentRoundTrip(t *testing.T) {
	t.Parallel()
	if tp := telemetry.TraceParent(t.Context()); tp != "" {
		t.Errorf("TraceParent without a span = %q, want empty", tp)
	}
	p, _ := recorded()
	ctx, span := p.Tracer("test").Start(t.Context(), "write")
	defer span.End()
	tp := telemetry.TraceParent(ctx)
	back := trace.SpanContextFromContext(telemetry.WithTraceParent(context.Background(), tp))
	if back.TraceID() != span.SpanContext().TraceID() || back.SpanID() != span.SpanContext().SpanID() || !back.IsRemote() {
		t.Errorf("WithTraceParent(%q) = %v, want the span's context, remote", tp, back)
	}
	for _, bad := range []string{"", "garbage", "00-zz-yy-01"} {
		if sc := trace.SpanContextFromContext(telemetry.WithTraceParent(context.Background(), bad)); sc.IsValid() {
			t.Errorf("WithTraceParent(%q) made a span context %v", bad, sc)
		}
	}
}

func TestRoute(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/api/execute":                           "/api/execute",
		"/api/commands/417093386881359872/claim": "/api/commands/{id}/claim",
		"/api/v2/internal/queries/6f1c2a9e-1d2b-4c3d-9e8f-0a1b2c3d4e5f/claim": "/api/v2/internal/queries/{id}/claim",
		"/api/catalog/flows/v2": "/api/catalog/flows/v2",
	} {
		if got := telemetry.Route(in); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
}

func hasAttr(attrs []attribute.KeyValue, want attribute.KeyValue) bool {
	for _, a := range attrs {
		if a == want {
			return true
		}
	}
	return false
}
