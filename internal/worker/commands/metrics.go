package commands

import (
	"encoding/json"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millrace/millrace/internal/api"
)

// mStepDuration times a command's tool from start to finish (task lists
// as "tasks"), 1 ms to about 17 minutes.
var mStepDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "millrace_step_duration_seconds",
	Help:    "How long a step's tool ran on this worker, by tool kind and outcome (completed or failed).",
	Buckets: prometheus.ExponentialBuckets(0.001, 4, 11),
}, []string{"tool", "outcome"})

// observeStep records one finished run. A run cut short by the worker
// (shutdown, a lost lease) is not a step's duration and is left out.
func observeStep(cmd api.Command, took time.Duration, err error) {
	outcome := "completed"
	if err != nil {
		outcome = "failed"
	}
	mStepDuration.WithLabelValues(stepTool(cmd), outcome).Observe(took.Seconds())
}

// stepTool is the "kind" of the command's tool config ("tasks" when it
// does not say, as toolKind names the span).
func stepTool(cmd api.Command) string {
	var t struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(cmd.Tool, &t) != nil || t.Kind == "" {
		return "tasks"
	}
	return t.Kind
}
