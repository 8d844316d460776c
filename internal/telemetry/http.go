package telemetry

import (
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Handler wraps next, a ServeMux (or a handler that serves the request it
// is given to one), with one server span per request, a child of the
// caller's traceparent, named "METHOD /route/pattern" once the mux has
// matched the route. A nil tr (tracing off) returns next itself: no
// wrapper, no cost.
func Handler(tr trace.Tracer, next http.Handler) http.Handler {
	if tr == nil {
		return next
	}
	return &handler{tr: tr, next: next}
}

type handler struct {
	tr   trace.Tracer
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := h.tr.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	defer span.End()
	r = r.WithContext(ctx)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.next.ServeHTTP(sw, r)
	// ServeMux records the matched pattern on the request it was given.
	if route := r.Pattern; route != "" && route != "/" {
		if _, path, ok := strings.Cut(route, " "); ok {
			route = path // "POST /api/execute": the method is in the name already
		}
		span.SetName(r.Method + " " + route)
		span.SetAttributes(attribute.String("http.route", route))
	}
	span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
	if sw.status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(sw.status))
	}
}

// statusWriter records the response status. Unwrap lets
// http.ResponseController reach the writer's Flush and deadlines (live
// streams need them); Flush serves callers that assert http.Flusher.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport wraps next with one client span per request, whose
// traceparent the request carries. A nil tr (tracing off) returns next
// itself.
func Transport(tr trace.Tracer, next http.RoundTripper) http.RoundTripper {
	if tr == nil {
		return next
	}
	return &transport{tr: tr, next: next}
}

type transport struct {
	tr   trace.Tracer
	next http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	route := Route(req.URL.Path)
	ctx, span := t.tr.Start(req.Context(), req.Method+" "+route, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", req.Method), attribute.String("url.template", route),
			attribute.String("server.address", req.URL.Host)))
	defer span.End()
	r := req.Clone(ctx) // a RoundTripper must not change its request
	Propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return resp, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(resp.StatusCode))
	}
	return resp, nil
}

// CloseIdleConnections passes on to next, as http.Client expects.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Route turns a request path into a span name's route: a segment that is
// an id (all digits, or a long one with digits: a uuid) becomes {id}, so
// that names do not grow with the number of executions.
func Route(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if isID(s) {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

func isID(s string) bool {
	if s == "" {
		return false
	}
	digits := 0
	for _, c := range s {
		if c >= '0' && c <= '9' {
			digits++
		}
	}
	return digits == len(s) || (len(s) >= 16 && digits > 0)
}
