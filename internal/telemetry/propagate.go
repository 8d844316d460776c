package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Propagator carries trace context on HTTP requests: W3C tracecontext and
// baggage. The outbox and NATS carry only the traceparent.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Header is the NATS message header (and outbox column) that carries the
// W3C traceparent.
const Header = "traceparent"

// TraceParent returns the W3C traceparent of ctx's span, or "" when ctx
// carries none (tracing off): what the outbox row stores.
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c[Header]
}

// WithTraceParent returns ctx with the remote span context tp names as
// parent; an empty or malformed tp leaves ctx as it is.
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{Header: tp})
}

// Start starts a span named name under ctx's span with tr. A nil tr
// (tracing off) returns ctx and a span that does nothing, at no cost.
func Start(ctx context.Context, tr trace.Tracer, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if tr == nil {
		return ctx, noSpan
	}
	return tr.Start(ctx, name, opts...)
}

// noSpan is the span of a context without one: every method does nothing.
var noSpan = trace.SpanFromContext(context.Background())
