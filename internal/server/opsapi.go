package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/millrace/millrace/internal/apierr"
	"github.com/millrace/millrace/internal/auth"
	"github.com/millrace/millrace/internal/monitor"
)

// WithOps serves GET /api/ops from mon and adds its gauges to /metrics.
func WithOps(mon *monitor.Monitor) Option {
	return func(a *API) {
		a.ops = mon
		a.route("GET /api/ops", auth.Readers, a.opsGet)
	}
}

// opsGet answers the operational picture `millrace doctor` prints.
func (a *API) opsGet(w http.ResponseWriter, r *http.Request) (any, error) {
	rep, err := a.ops.Report(r.Context())
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "the operational report was not ready before the request ended: %v; try again", err)
	}
	return rep, nil
}

// metrics serves the process-wide metrics and, with WithOps, this
// server's own gauges (package monitor keeps them on a registry of its
// own, so servers sharing a process do not overwrite each other's).
func (a *API) metrics() http.Handler {
	if a.ops == nil {
		return promhttp.Handler()
	}
	g := prometheus.Gatherers{prometheus.DefaultGatherer, a.ops.Gatherer()}
	return promhttp.InstrumentMetricHandler(prometheus.DefaultRegisterer, promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}
