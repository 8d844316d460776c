// Package telemetry owns OpenTelemetry tracing: the tracer provider built
// from the standard OTEL_* settings (off unless an OTLP endpoint is set),
// and carrying trace context across the hops a command takes: HTTP
// requests, the outbox row, NATS message headers.
package telemetry
