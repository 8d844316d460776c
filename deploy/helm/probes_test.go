package helm_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/millrace/millrace/internal/cli"
	"github.com/millrace/millrace/internal/config"
	"github.com/millrace/millrace/internal/gateway"
	"github.com/millrace/millrace/internal/server/servertest"
	"github.com/millrace/millrace/internal/wait"
	"github.com/millrace/millrace/internal/worker"
)

// httpProbes returns "probe: path" for every httpGet probe of a container.
func httpProbes(c *corev1.Container) map[string]string {
	out := map[string]string{}
	for what, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p != nil && p.HTTPGet != nil {
			out[what] = p.HTTPGet.Path
		}
	}
	return out
}

// getOK polls base+path until it answers 200, failing the test at the
// deadline with the last answer.
func getOK(t *testing.T, what, base, path string) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		resp, err := http.Get(base + path)
		if err != nil {
			return fmt.Errorf("%s: GET %s: %v", what, path, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: GET %s answered %d: %s", what, path, resp.StatusCode, body)
		}
		return nil
	})
}

// The probe and scrape paths the chart renders exist: each is GET on a
// live server (authentication on, no token: probes send none), gateway,
// worker metrics listener and NATS, and answers 200.
func TestProbePathsAreServed(t *testing.T) {
	t.Parallel()
	m := mustRender(t, setValues(t, "existing-secret")) // gateway and monitors on

	t.Run("server", func(t *testing.T) {
		t.Parallel()
		c := &deployment(t, m, "server").Spec.Template.Spec.Containers[0]
		probes := httpProbes(c)
		for _, what := range []string{"startup", "liveness", "readiness"} {
			if probes[what] == "" {
				t.Errorf("server has no %s httpGet probe", what)
			}
		}
		if probes["liveness"] == probes["readiness"] {
			t.Errorf("server liveness and readiness both GET %s; liveness must not check the database, or losing it restarts every server", probes["liveness"])
		}
		h := servertest.Start(t, servertest.WithAuth())
		for what, path := range probes {
			getOK(t, "server "+what+" probe", h.Srv.URL(), path)
		}
		for _, sm := range all[monitoringv1.ServiceMonitor](m) {
			for _, ep := range sm.Spec.Endpoints {
				getOK(t, "ServiceMonitor "+sm.Name, h.Srv.URL(), ep.Path)
			}
		}
		t.Run("gateway", func(t *testing.T) {
			t.Parallel()
			c := &deployment(t, m, "gateway").Spec.Template.Spec.Containers[0]
			var cfg config.Gateway
			config.GatewaySet(&cfg)
			id := fmt.Sprintf("%d", time.Now().UnixNano())
			cfg.NATS.URL = h.NATS.URL()
			cfg.ServerURL = h.Srv.URL()
			cfg.Addr = "127.0.0.1:0"
			cfg.SessionBucket = "sessions_" + id
			cfg.RequestBucket = "requests_" + id
			g, err := gateway.New(t.Context(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewServer(g.Handler())
			t.Cleanup(func() { g.Close(); ts.Close() })
			probes := httpProbes(c)
			if probes["readiness"] == "" {
				t.Error("gateway has no readiness httpGet probe")
			}
			for what, path := range probes {
				getOK(t, "gateway "+what+" probe", ts.URL, path)
			}
			for _, sm := range all[monitoringv1.ServiceMonitor](m) {
				for _, ep := range sm.Spec.Endpoints {
					getOK(t, "ServiceMonitor "+sm.Name+" on the gateway", ts.URL, ep.Path)
				}
			}
		})
	})

	t.Run("worker", func(t *testing.T) {
		t.Parallel()
		ts := httptest.NewServer(worker.MetricsHandler())
		t.Cleanup(ts.Close)
		for _, p := range pools(t, m.render.values) {
			d := deployment(t, m, "worker-"+p.name)
			probes := httpProbes(&d.Spec.Template.Spec.Containers[0])
			if probes["liveness"] == "" || probes["readiness"] == "" {
				t.Errorf("%s: liveness and readiness must be httpGet probes, got %v", d.Name, probes)
			}
			for what, path := range probes {
				if path != worker.HealthPath {
					t.Errorf("%s %s probe GETs %s, but the worker serves worker.HealthPath %s", d.Name, what, path, worker.HealthPath)
				}
				getOK(t, d.Name+" "+what+" probe", ts.URL, path)
			}
		}
		for _, pm := range all[monitoringv1.PodMonitor](m) {
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				getOK(t, "PodMonitor "+pm.Name, ts.URL, ep.Path)
			}
		}
	})

	t.Run("nats", func(t *testing.T) {
		t.Parallel()
		sts := natsStatefulSet(t, m)
		c := container(&sts.Spec.Template.Spec, "nats")
		ns, err := natsserver.NewServer(&natsserver.Options{
			Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(ns.Shutdown)
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server did not start")
		}
		base := "http://" + ns.MonitorAddr().String()
		probes := httpProbes(c)
		if len(probes) != 3 {
			t.Errorf("NATS httpGet probes %v, want startup, liveness and readiness", probes)
		}
		for what, path := range probes {
			getOK(t, "NATS "+what+" probe", base, path)
		}
	})
}

// Every Millrace container's args are a real `millrace` command line, and
// every environment variable it gets is a setting of that command (or, in
// the ConfigMap every role shares, of some command) with a value the
// setting accepts.
func TestArgsAndEnvironmentAreMillraceSettings(t *testing.T) {
	t.Parallel()
	var (
		srv config.Server
		wrk config.Worker
		gw  config.Gateway
		mig config.Migrate
	)
	sets := map[string]*config.Set{
		"server":  config.ServerSet(&srv),
		"worker":  config.WorkerSet(&wrk),
		"gateway": config.GatewaySet(&gw),
		"migrate": config.MigrateSet(&mig),
	}
	byEnv := map[string]map[string]*config.Setting{} // role -> env -> setting
	known := map[string]bool{}
	for role, s := range sets {
		byEnv[role] = map[string]*config.Setting{}
		for _, st := range s.Settings() {
			byEnv[role][st.Env] = st
			known[st.Env] = true
		}
	}
	// Variables the chart sets for the runtime, not for Millrace.
	notSettings := map[string]string{
		"HOME":                       "a writable home on the read-only root file system",
		"OTEL_EXPORTER_OTLP_HEADERS": "read by the OpenTelemetry SDK's OTLP exporter, not a flag (it is a secret)",
	}
	// The address each role listens on, and the container port it must be.
	listens := map[string]struct{ env, port string }{
		"server":  {"MILLRACE_ADDR", "http"},
		"gateway": {"MILLRACE_GATEWAY_ADDR", "http"},
		"worker":  {"MILLRACE_WORKER_METRICS_ADDR", "metrics"},
	}
	extraEnv := values(t, `
config:
  shared: {OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:4318"}
  server: {MILLRACE_LEASE_SECONDS: "60"}
  worker: {NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS: "25"}
`)
	for set, vals := range allSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, merge(vals, extraEnv))
			image := fmt.Sprint(lookupValue(m.render.values, "image.repository"))
			n := 0
			for _, w := range m.workloads() {
				for _, c := range w.spec.Containers {
					if !strings.HasPrefix(c.Image, image+":") {
						continue // NATS
					}
					n++
					where := fmt.Sprintf("%s %s container %s", w.kind, w.name, c.Name)
					if len(c.Args) == 0 || len(c.Command) != 0 {
						t.Errorf("%s: command %q args %q; the image's entrypoint is millrace and args name the role", where, c.Command, c.Args)
						continue
					}
					role := c.Args[0]
					root := cli.NewRoot(io.Discard, io.Discard)
					cmd, rest, err := root.Find(c.Args)
					if err != nil || cmd == root || cmd.Name() != role {
						t.Errorf("%s: args %q are not a millrace command (%v)", where, c.Args, err)
						continue
					}
					if err := cmd.ParseFlags(rest); err != nil {
						t.Errorf("%s: millrace %s rejects args %q: %v", where, role, rest, err)
					} else if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
						t.Errorf("%s: millrace %s rejects args %q: %v", where, role, rest, err)
					}
					env, err := m.env(c)
					if err != nil {
						t.Fatal(err)
					}
					if l, ok := listens[role]; ok {
						_, port, err := net.SplitHostPort(env[l.env].value)
						if want := containerPort(&c, l.port); err != nil || port != strconv.Itoa(int(want)) || want == 0 {
							t.Errorf("%s: %s=%q does not listen on the container port %s (%d) that probes and Services use", where, l.env, env[l.env].value, l.port, want)
						}
					}
					roleSettings, ok := byEnv[role]
					if !ok {
						t.Errorf("%s: role %q has no settings the test knows (add its config set)", where, role)
						continue
					}
					for name, ev := range env {
						if _, ok := notSettings[name]; ok {
							continue
						}
						st := roleSettings[name]
						if st == nil {
							if ev.source == "ConfigMap "+fullname+"-config" && known[name] {
								continue // shared by every role, read by some
							}
							t.Errorf("%s: %s (from %s) is not a setting of millrace %s", where, name, ev.source, role)
							continue
						}
						if ev.secret != nil || ev.fromField {
							continue
						}
						f := cmd.Flags().Lookup(st.Flag)
						if f == nil {
							t.Errorf("%s: millrace %s has no flag --%s for %s", where, role, st.Flag, name)
							continue
						}
						if err := f.Value.Set(ev.value); err != nil {
							t.Errorf("%s: %s=%q is not a valid value: %v", where, name, ev.value, err)
						}
					}
				}
			}
			if n == 0 {
				t.Fatal("no Millrace containers")
			}
		})
	}
}

// The NATS containers run the image the values name, and Millrace's the
// chart's appVersion unless image.tag is set.
func TestImages(t *testing.T) {
	t.Parallel()
	ch := loadChart(t)
	for _, tc := range []struct{ vals, want string }{
		{"", "ghcr.io/millrace/millrace:" + ch.Metadata.AppVersion},
		{"image: {repository: registry.example.com/mr, tag: v9.9.9}", "registry.example.com/mr:v9.9.9"},
	} {
		m := mustRender(t, values(t, tc.vals))
		for _, w := range m.workloads() {
			for _, c := range w.spec.Containers {
				want := tc.want
				if w.kind == "StatefulSet" {
					want = "nats:2.12-alpine"
				}
				if c.Image != want {
					t.Errorf("values %q: %s %s container %s runs %s, want %s", tc.vals, w.kind, w.name, c.Name, c.Image, want)
				}
			}
		}
	}
}

// NOTES.txt maps the seeds' checklist to Millrace's CLI, and every object
// it names (kubectl … deploy/X, svc/X, job/X, secret X) is one the release
// has.
func TestNotes(t *testing.T) {
	t.Parallel()
	refs := regexp.MustCompile(`\b(deploy|svc|job)/([a-z0-9-]+)|get secret ([a-z0-9-]+)`)
	for name, vals := range allSets(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, vals)
			var notes string
			for file, text := range m.render.files {
				if strings.HasSuffix(file, "NOTES.txt") {
					notes = text
				}
			}
			for _, want := range []string{"millrace doctor", "millrace nats stream report", "millrace nats consumer report", "port-forward svc/" + fullname + "-server"} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES.txt lacks %q", want)
				}
			}
			existing, _ := vals["existingSecret"].(string)
			creds, _ := lookupValue(vals, "natsCredentials.existingSecret").(string)
			for _, r := range refs.FindAllStringSubmatch(notes, -1) {
				var ok bool
				switch {
				case r[1] == "deploy":
					ok = get[appsv1.Deployment](m, r[2]) != nil
				case r[1] == "svc":
					ok = get[corev1.Service](m, r[2]) != nil
				case r[1] == "job":
					ok = get[batchv1.Job](m, r[2]) != nil
				default:
					ok = get[corev1.Secret](m, r[3]) != nil || (existing != "" && r[3] == existing) || (creds != "" && r[3] == creds)
				}
				if !ok {
					t.Errorf("NOTES.txt names %s, which the release does not have", r[0])
				}
			}
		})
	}
}
