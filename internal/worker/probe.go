package worker

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HealthPath is the worker's probe on MILLRACE_WORKER_METRICS_ADDR. The
// Helm chart's liveness and readiness probes GET it; its tests check the
// chart against this constant and this handler.
const HealthPath = "/healthz"

// MetricsHandler serves a worker's /metrics (the default Prometheus
// registry) and HealthPath. HealthPath answers 200 as soon as the listener
// runs, which `millrace worker` starts only once the worker has checked its
// token and connected; a wedged process stops answering and is restarted.
func MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return mux
}
