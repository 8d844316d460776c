package helm_test

import (
	"encoding/json"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"

	"github.com/millrace/millrace/internal/bus"
)

// helm lint (the SDK's lint.RunAll, schema validation included) finds
// nothing worse than an informational message under every value set (the ci/ ones and the tests' own).
func TestLint(t *testing.T) {
	t.Parallel()
	for set, vals := range allSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			res := lint.RunAll(chartDir, vals, namespace)
			for _, msg := range res.Messages {
				if msg.Severity >= support.WarningSev {
					t.Errorf("lint: %s", msg)
				} else {
					t.Logf("lint: %s", msg)
				}
			}
		})
	}
}

// The values schema (and the template checks it cannot express) reject
// bad values with an error that names the key. Each bad value is one
// change to values that render.
func TestBadValuesAreRejected(t *testing.T) {
	t.Parallel()
	// A pool list to doctor: values lists replace the chart's whole list.
	pool := func(extra string) string {
		return "workers:\n  pools:\n    - name: commands\n      stream: commands\n" + extra
	}
	cases := []struct {
		name string
		vals string
		want []string // every one must be in the error
	}{
		{"wrong stream name", "workers:\n  pools:\n    - name: commands\n      stream: command\n", []string{"stream"}},
		{"negative replicas", pool("      replicaCount: -1\n"), []string{"replicaCount"}},
		{"negative server replicas", "server: {replicaCount: -1}", []string{"replicaCount"}},
		{"concurrency 0", pool("      concurrency: 0\n"), []string{"concurrency"}},
		{"unknown top-level key", "replicas: 3", []string{"replicas"}},
		{"unknown pool key", pool("      replicas: 3\n"), []string{"replicas"}},
		{"misspelt nested key", "nats: {jetstream: {fileStore: {enabeld: true}}}", []string{"enabeld"}},
		{"bad pool name", "workers:\n  pools:\n    - name: GPU_pool\n      stream: commands\n", []string{"name"}},
		{"pool without a stream", "workers:\n  pools:\n    - name: commands\n", []string{"stream"}},
		{"KEDA and HPA both on", pool("      autoscaling: {keda: {enabled: true}, hpa: {enabled: true}}\n"), []string{"autoscaling.hpa.enabled"}},
		{"HPA without a CPU request", pool("      autoscaling: {hpa: {enabled: true}}\n"), []string{"resources.requests.cpu"}},
		{"database other than PostgreSQL", "secrets: {databaseUrl: \"sqlite:/data/millrace.db\"}", []string{"databaseUrl"}},
		{"grace equal to shutdown grace", pool("      shutdownGraceSeconds: 60\n      terminationGracePeriodSeconds: 60\n"), []string{"terminationGracePeriodSeconds", "shutdownGraceSeconds"}},
		{"grace below shutdown grace", pool("      shutdownGraceSeconds: 120\n"), []string{"terminationGracePeriodSeconds", "shutdownGraceSeconds"}},
		{"grace 0", pool("      shutdownGraceSeconds: 0\n"), []string{"shutdownGraceSeconds"}},
		{"duplicate pool names", pool("    - name: commands\n      stream: warehouse\n"), []string{"commands"}},
		{"routed pool on a query stream", "workers:\n  pools:\n    - name: warehouse\n      stream: warehouse\n      routed: true\n", []string{"routed"}},
		{"external NATS without a URL", "nats: {enabled: false}", []string{"nats.external.url"}},
		{"KEDA on an external NATS without a monitor endpoint", "nats: {enabled: false, external: {url: \"nats://n:4222\"}}\n" + pool("      autoscaling: {keda: {enabled: true}}\n"), []string{"monitoringEndpoint"}},
		{"wrong pull policy", "image: {pullPolicy: Sometimes}", []string{"pullPolicy"}},
		{"number for a string", "existingSecret: 5", []string{"existingSecret"}},
		{"NATS cluster of 2", "nats: {cluster: {enabled: true, replicas: 2}}", []string{"replicas"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderChart(t, values(t, tc.vals))
			if err == nil {
				t.Fatalf("values accepted:\n%s", tc.vals)
			}
			// The schema validator names keys as JSON pointers
			// (/nats/external/url), the templates with dots.
			msg := strings.ReplaceAll(err.Error(), "/", ".")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("the error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
	// The controls: the same shapes with good values render, so each case
	// above fails for its bad value alone.
	for _, good := range []string{
		pool(""),
		pool("      replicaCount: 0\n      concurrency: 1\n      shutdownGraceSeconds: 59\n"),
		pool("      autoscaling: {keda: {enabled: true}}\n"),
		pool("      autoscaling: {hpa: {enabled: true}}\n      resources: {requests: {cpu: 250m}}\n"),
		pool("    - name: gpu-2\n      stream: commands\n      routed: true\n"),
		"nats: {enabled: false, external: {url: \"nats://n:4222\", monitoringEndpoint: \"n:8222\"}}\n" + pool("      autoscaling: {keda: {enabled: true}}\n"),
		"nats: {cluster: {enabled: true, replicas: 5}}",
		"server: {replicaCount: 0}",
	} {
		if _, err := renderChart(t, values(t, good)); err != nil {
			t.Errorf("good values rejected:\n%s\n%v", good, err)
		}
	}
}

// values.schema.json is a draft-07 schema that closes our own objects.
func TestSchemaIsClosed(t *testing.T) {
	t.Parallel()
	ch := loadChart(t)
	var s map[string]any
	if err := json.Unmarshal(ch.Schema, &s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	if got := s["$schema"]; got != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema = %v, want draft-07", got)
	}
	for _, path := range []string{"", "image", "server", "workers", "nats", "nats.jetstream", "gateway", "metrics", "secrets", "migrations"} {
		node := s
		for k := range strings.SplitSeq(path, ".") {
			if k == "" {
				continue
			}
			props, _ := node["properties"].(map[string]any)
			node, _ = props[k].(map[string]any)
		}
		if node == nil {
			t.Errorf("schema has no object %q", path)
			continue
		}
		if node["additionalProperties"] != false {
			t.Errorf("schema object %q allows unknown keys (additionalProperties is not false)", path)
		}
	}
	// A pool name is what the workers accept as MILLRACE_WORKER_POOL.
	var name any = s
	for _, k := range []string{"properties", "workers", "properties", "pools", "items", "properties", "name", "pattern"} {
		m, _ := name.(map[string]any)
		name = m[k]
	}
	if name != bus.PoolNamePattern {
		t.Errorf("schema workers.pools[].name pattern %v, want internal/bus's %s", name, bus.PoolNamePattern)
	}
}
