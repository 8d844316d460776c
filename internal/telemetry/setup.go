package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/internal/config"
)

// ServiceVersion is service.version on every span; the CLI sets it to the
// binary's version before anything starts.
var ServiceVersion = "devel"

// Provider makes the tracers of one process (or, in tests, of one
// in-process role). A nil *Provider is tracing turned off: its Tracer is
// nil, and every hop checks for nil before it does any tracing work.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// Enabled tells whether cfg turns tracing on: an OTLP endpoint is set and
// OTEL_TRACES_EXPORTER is not none.
func Enabled(cfg config.Telemetry) bool {
	if strings.EqualFold(strings.TrimSpace(cfg.Exporter), "none") {
		return false
	}
	return cfg.Endpoint != "" || cfg.TracesEndpoint != ""
}

// Setup builds the tracer provider cfg describes. It returns nil (tracing
// off) when Enabled(cfg) is false. instance is service.instance.id (a
// worker id; empty: host name and process id). When tracing is on, log
// (if not nil) says where spans go, so an operator can tell it is on.
func Setup(ctx context.Context, cfg config.Telemetry, instance string, log *slog.Logger) (*Provider, error) {
	if !Enabled(cfg) {
		return nil, nil
	}
	if e := strings.ToLower(strings.TrimSpace(cfg.Exporter)); e != "" && e != "otlp" {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s is not supported: use otlp (with OTEL_EXPORTER_OTLP_ENDPOINT) or none", cfg.Exporter)
	}
	sampler, err := sampler(cfg.Sampler, cfg.SamplerArg)
	if err != nil {
		return nil, err
	}
	exp, err := exporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if instance == "" {
		host, _ := os.Hostname()
		instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	// OTEL_RESOURCE_ATTRIBUTES first, so that the settings below win.
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithAttributes(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", ServiceVersion),
		attribute.String("service.instance.id", instance),
	))
	if err != nil && res == nil {
		return nil, fmt.Errorf("trace resource: %w (check OTEL_RESOURCE_ATTRIBUTES)", err)
	}
	if log != nil {
		endpoint := cfg.TracesEndpoint
		if endpoint == "" {
			endpoint = cfg.Endpoint
		}
		if u, err := url.Parse(endpoint); err == nil {
			endpoint = u.Redacted()
		}
		log.Info("tracing on", "endpoint", endpoint, "protocol", cfg.Protocol, "sampler", cfg.Sampler,
			"sampler_arg", cfg.SamplerArg, "service", cfg.ServiceName)
	}
	return NewProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sampler), sdktrace.WithResource(res)), nil
}

// NewProvider wraps an SDK tracer provider built from opts (tests and
// benchmarks pass an in-memory exporter).
func NewProvider(opts ...sdktrace.TracerProviderOption) *Provider {
	return &Provider{tp: sdktrace.NewTracerProvider(opts...)}
}

// Tracer returns the named tracer, or nil when p is nil (tracing off).
func (p *Provider) Tracer(name string) trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tp.Tracer(name)
}

// Shutdown exports what is buffered and stops the provider; call it on
// exit. A nil p does nothing.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush traces: %w (is the OTLP endpoint reachable?)", err)
	}
	return nil
}

// exporter builds the OTLP exporter for cfg.Protocol. The generic endpoint
// is a base URL to which the signal path is added, the traces endpoint is
// used as it is, as the OTLP specification says. Other OTEL_EXPORTER_OTLP_*
// variables (headers, certificates, timeout) are read by the exporter.
func exporter(ctx context.Context, cfg config.Telemetry) (sdktrace.SpanExporter, error) {
	proto := strings.ToLower(strings.TrimSpace(cfg.Protocol))
	endpoint := cfg.TracesEndpoint
	switch proto {
	case "", "http/protobuf", "http/json":
		if endpoint == "" {
			endpoint = strings.TrimRight(cfg.Endpoint, "/") + "/v1/traces"
		}
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)}
		if proto == "http/json" {
			opts = append(opts, otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON))
		}
		return otlptracehttp.New(ctx, opts...)
	case "grpc":
		if endpoint == "" {
			endpoint = cfg.Endpoint
		}
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(endpoint))
	}
	return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: use http/protobuf, http/json or grpc", cfg.Protocol)
}

// sampler maps OTEL_TRACES_SAMPLER and its argument to a sampler.
func sampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio between 0 and 1", arg)
		}
		ratio = r
	}
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	return nil, errors.New("OTEL_TRACES_SAMPLER=" + name + " is not supported: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio")
}
