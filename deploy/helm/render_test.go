package helm_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"
)

// The chart under test, and the release it is rendered as. The release
// name does not contain "millrace", so every object is named
// "<release>-millrace-<part>".
const (
	chartDir  = "millrace"
	release   = "rel"
	namespace = "ops"
	fullname  = release + "-millrace"
)

// valueSets are the value files in the chart's ci/ directory that the
// issue asks the chart to be rendered under; each must exist.
var valueSets = []string{"defaults", "external-nats", "file-store", "nats-cluster", "keda", "existing-secret"}

// extraSets are value sets of the tests' own, for what the ci/ sets leave
// out: every other switch flipped.
var extraSets = map[string]string{
	"queries in the server": "server: {natsEnabled: false}",
	"everything else": `
serviceAccount: {create: false, name: millrace-sa}
migrations: {job: {enabled: false}}
server: {natsEnabled: false, results: {existingClaim: results-rwx}, pdb: {enabled: false}}
gateway: {enabled: true, ingress: {enabled: true}, pdb: {enabled: false}}
natsCredentials: {existingSecret: creds}
secrets: {databaseUrl: "postgres://u:p@db:5432/millrace"}
auth: {mode: none}
nats: {networkPolicy: {enabled: false}, streamReplicas: 3, jetstream: {memoryStore: {maxSize: 1Gi}}}
workers:
  defaults: {concurrency: 8}
  pools:
    - {name: commands, stream: commands, pdb: {enabled: false}}
    - {name: gpu, stream: commands, routed: true, routing: cuda, concurrency: 2}
    - {name: cpu, stream: commands, routed: true, autoscaling: {hpa: {enabled: true}}, resources: {requests: {cpu: 1}}}
    - {name: warehouse, stream: warehouse}
metrics:
  serviceMonitor: {enabled: true}
  podMonitor: {enabled: true}
  prometheusRule: {enabled: true}
  grafanaDashboard: {enabled: true}
config:
  shared: {OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:4318"}
  server: {MILLRACE_LEASE_SECONDS: "60"}
  worker: {NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS: "25"}
`,
}

// allSets is the ci/ value sets and the extra ones, by name.
func allSets(t testing.TB) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, set := range valueSets {
		out[set] = setValues(t, set)
	}
	for name, y := range extraSets {
		out[name] = values(t, y)
	}
	return out
}

// loadChart reads the chart from disk. Each render loads its own copy: the
// SDK's value coalescing writes into the chart it is given, and the tests
// render in parallel.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("load the chart from deploy/helm/%s: %v", chartDir, err)
	}
	return ch
}

// setValues reads ci/<set>.yaml.
func setValues(t testing.TB, set string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "ci", set+".yaml"))
	if err != nil {
		t.Fatalf("value set %s: %v (the chart must ship ci/%s.yaml)", set, err, set)
	}
	v := map[string]any{}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("value set ci/%s.yaml: %v", set, err)
	}
	return v
}

// values parses a YAML snippet of override values.
func values(t testing.TB, y string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatalf("test values %q: %v", y, err)
	}
	return v
}

// merge deep-merges override maps left to right (later wins; lists are
// replaced, as helm -f does).
func merge(layers ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, l := range layers {
		for k, v := range l {
			if vm, ok := v.(map[string]any); ok {
				if om, ok := out[k].(map[string]any); ok {
					out[k] = merge(om, vm)
					continue
				}
				out[k] = merge(vm)
				continue
			}
			out[k] = v
		}
	}
	return out
}

// renderResult is one render of the chart: the manifests by template file
// and the values the templates saw (defaults coalesced with the overrides).
type renderResult struct {
	files  map[string]string
	values common.Values
}

// renderChart renders the chart as `helm install rel --namespace ops -f
// <vals>` renders it, schema validation included, without a cluster
// (lookup finds nothing).
func renderChart(t testing.TB, vals map[string]any) (renderResult, error) {
	t.Helper()
	return renderChartAs(t, release, vals)
}

// renderChartAs is renderChart for a release of another name.
func renderChartAs(t testing.TB, name string, vals map[string]any) (renderResult, error) {
	t.Helper()
	ch := loadChart(t)
	opts := common.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(ch, vals, opts, nil)
	if err != nil {
		return renderResult{}, err
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		return renderResult{}, err
	}
	v, _ := top["Values"].(common.Values)
	return renderResult{files: files, values: v}, nil
}

// renders caches mustRender's results by values: most tests look at the
// same value sets, and rendering under -race is slow. Tests only read
// what they get.
var renders sync.Map // JSON of the values -> *cachedRender

type cachedRender struct {
	once sync.Once
	m    *manifests
	err  error
}

// mustRender is renderChart for values that must render, decoded strictly.
func mustRender(t testing.TB, vals map[string]any) *manifests {
	t.Helper()
	key, err := json.Marshal(vals) // map keys sorted: equal values, equal keys
	if err != nil {
		t.Fatal(err)
	}
	v, _ := renders.LoadOrStore(string(key), new(cachedRender))
	c := v.(*cachedRender)
	c.once.Do(func() {
		r, err := renderChart(t, vals)
		if err != nil {
			c.err = fmt.Errorf("render: %w", err)
			return
		}
		c.m, c.err = decodeAll(r)
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	if c.m == nil {
		t.Fatal("the render of these values failed in another test")
	}
	return c.m
}

// renderFresh is mustRender without the cache, for tests that compare two
// renders of the same values.
func renderFresh(t testing.TB, vals map[string]any) *manifests {
	t.Helper()
	r, err := renderChart(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	m, err := decodeAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs cuts rendered template output into YAML documents, dropping
// empty ones and ones holding only comments.
func splitDocs(s string) []string {
	var docs []string
	for _, d := range docSep.Split(s, -1) {
		empty := true
		for line := range strings.SplitSeq(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, d)
		}
	}
	return docs
}

// manifestFiles lists the rendered files that hold manifests, in a stable
// order: not NOTES.txt, not partials.
func manifestFiles(files map[string]string) []string {
	var names []string
	for _, name := range slices.Sorted(maps.Keys(files)) {
		base := filepath.Base(name)
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(base, "_") {
			continue
		}
		names = append(names, name)
	}
	return names
}
