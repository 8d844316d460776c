package helm_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Every value set renders, every manifest decodes strictly into its API
// type, and the objects hang together: selectors find their pods, Services
// and monitors name ports that exist, references name rendered objects.
func TestValueSetsRenderStrictly(t *testing.T) {
	t.Parallel()
	for set, vals := range allSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, vals)
			if len(m.all) == 0 {
				t.Fatal("the chart rendered no objects")
			}
			checkConsistent(t, m)
		})
	}
}

// checkConsistent holds for every render.
func checkConsistent(t *testing.T, m *manifests) {
	t.Helper()
	v := m.render.values
	chartLabel := "millrace-" + loadChart(t).Metadata.Version
	for _, o := range m.all {
		want := map[string]string{
			"app.kubernetes.io/name":       "millrace",
			"app.kubernetes.io/instance":   release,
			"app.kubernetes.io/managed-by": "Helm",
			"helm.sh/chart":                chartLabel,
		}
		for k, w := range want {
			if got := o.meta.Labels[k]; got != w {
				t.Errorf("%s: label %s = %q, want %q", o, k, got, w)
			}
		}
		if o.meta.Labels["app.kubernetes.io/component"] == "" {
			t.Errorf("%s: no app.kubernetes.io/component label", o)
		}
		if !strings.HasPrefix(o.meta.Name, fullname) {
			t.Errorf("%s: name does not start with the release's fullname %q", o, fullname)
		}
		if o.meta.Namespace != "" && o.meta.Namespace != namespace {
			t.Errorf("%s: namespace %q, want the release's (%q) or none", o, o.meta.Namespace, namespace)
		}
	}

	wls := m.workloads()
	// Controllers select their own pods.
	for _, o := range m.all {
		var sel *metav1.LabelSelector
		var tmpl map[string]string
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			sel, tmpl = x.Spec.Selector, x.Spec.Template.Labels
		case *appsv1.StatefulSet:
			sel, tmpl = x.Spec.Selector, x.Spec.Template.Labels
			if get[corev1.Service](m, x.Spec.ServiceName) == nil {
				t.Errorf("%s: serviceName %q is not a rendered Service", o, x.Spec.ServiceName)
			}
		default:
			continue
		}
		if !selects(t, sel, tmpl) {
			t.Errorf("%s: selector %v does not match its pod template's labels %v", o, sel, tmpl)
		}
	}
	// Services select pods of the release that have the target ports.
	for _, s := range all[corev1.Service](m) {
		matched := 0
		for _, w := range wls {
			if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.labels)) || len(s.Spec.Selector) == 0 {
				continue
			}
			matched++
			for _, p := range s.Spec.Ports {
				if !hasPort(w.spec, p.TargetPort) {
					t.Errorf("Service %s port %s: target port %s is not a port of %s %s", s.Name, p.Name, p.TargetPort.String(), w.kind, w.name)
				}
			}
		}
		if matched == 0 {
			t.Errorf("Service %s: selector %v matches no rendered pods", s.Name, s.Spec.Selector)
		}
	}
	// A PDB covers exactly one workload's pods (a pool's PDB must not
	// count another pool's pods as its own).
	for _, p := range all[policyv1.PodDisruptionBudget](m) {
		var hit []string
		for _, w := range wls {
			if w.kind != "Job" && selects(t, p.Spec.Selector, w.labels) {
				hit = append(hit, w.name)
			}
		}
		if len(hit) != 1 {
			t.Errorf("PodDisruptionBudget %s: selector %v matches the pods of %v, want exactly one workload", p.Name, p.Spec.Selector, hit)
		}
	}
	// Autoscalers scale a rendered Deployment that leaves replicas to them.
	targets := map[string]string{}
	for _, h := range all[autoscalingv2.HorizontalPodAutoscaler](m) {
		targets[h.Name] = h.Spec.ScaleTargetRef.Kind + "/" + h.Spec.ScaleTargetRef.Name
	}
	for _, so := range all[scaledObject](m) {
		if so.Spec.ScaleTargetRef == nil {
			t.Errorf("ScaledObject %s: no scaleTargetRef", so.Name)
			continue
		}
		k := so.Spec.ScaleTargetRef.Kind
		if k == "" {
			k = "Deployment"
		}
		targets[so.Name] = k + "/" + so.Spec.ScaleTargetRef.Name
	}
	// A utilization target is a percentage of the pods' requests: without
	// a request the HPA cannot compute it and never scales.
	for _, h := range all[autoscalingv2.HorizontalPodAutoscaler](m) {
		d := get[appsv1.Deployment](m, h.Spec.ScaleTargetRef.Name)
		if d == nil {
			continue // reported below
		}
		for _, mt := range h.Spec.Metrics {
			if mt.Resource == nil || mt.Resource.Target.Type != autoscalingv2.UtilizationMetricType {
				continue
			}
			for _, c := range d.Spec.Template.Spec.Containers {
				if _, ok := c.Resources.Requests[mt.Resource.Name]; !ok {
					t.Errorf("HorizontalPodAutoscaler %s targets %s utilization, but container %s of %s requests no %s: the HPA cannot scale it", h.Name, mt.Resource.Name, c.Name, d.Name, mt.Resource.Name)
				}
			}
		}
	}
	scaled := map[string]string{}
	for by, tg := range targets {
		kind, name, _ := strings.Cut(tg, "/")
		d := get[appsv1.Deployment](m, name)
		if kind != "Deployment" || d == nil {
			t.Errorf("autoscaler %s: target %s is not a rendered Deployment", by, tg)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s: sets replicas (%d) although %s scales it; every helm upgrade would reset the scale", name, *d.Spec.Replicas, by)
		}
		if prev, ok := scaled[name]; ok {
			t.Errorf("Deployment %s is scaled by both %s and %s", name, prev, by)
		}
		scaled[name] = by
	}
	// References: Secrets, ConfigMaps, ServiceAccounts.
	secretName := fullname
	if es, _ := v["existingSecret"].(string); es != "" {
		secretName = es
		if len(all[corev1.Secret](m)) != 0 {
			t.Errorf("existingSecret is set but the chart renders a Secret")
		}
	}
	natsCredsSecret, _ := lookupValue(v, "natsCredentials.existingSecret").(string)
	chartSecret := get[corev1.Secret](m, fullname)
	saCreate, _ := lookupValue(v, "serviceAccount.create").(bool)
	for _, w := range wls {
		for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				t.Errorf("%s %s container %s: has a preStop hook; it delays SIGTERM and with it the release of in-flight work", w.kind, w.name, c.Name)
			}
			if _, err := m.env(c); err != nil {
				t.Errorf("%s %s: %v", w.kind, w.name, err)
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				if ref.Name != secretName {
					t.Errorf("%s %s: env %s reads Secret %q, want %q", w.kind, w.name, e.Name, ref.Name, secretName)
				}
				// DATABASE_URL may be missing on purpose: the chart renders
				// without one and NOTES.txt says so (checked below).
				noDB := ref.Key == "DATABASE_URL" && lookupValue(v, "secrets.databaseUrl") == ""
				if chartSecret != nil && secretName == fullname && !noDB {
					_, inData := chartSecret.Data[ref.Key]
					_, inString := chartSecret.StringData[ref.Key]
					optional := ref.Optional != nil && *ref.Optional
					if !inData && !inString && !optional {
						t.Errorf("%s %s: env %s reads key %s, which the chart's Secret lacks and which is not optional", w.kind, w.name, e.Name, ref.Key)
					}
				}
			}
		}
		for _, vol := range w.spec.Volumes {
			if vol.ConfigMap != nil && get[corev1.ConfigMap](m, vol.ConfigMap.Name) == nil {
				t.Errorf("%s %s: volume %s: ConfigMap %q is not rendered", w.kind, w.name, vol.Name, vol.ConfigMap.Name)
			}
			if vol.Secret != nil && vol.Secret.SecretName != natsCredsSecret && vol.Secret.SecretName != secretName {
				t.Errorf("%s %s: volume %s: Secret %q is neither the chart's secret nor natsCredentials.existingSecret", w.kind, w.name, vol.Name, vol.Secret.SecretName)
			}
		}
		if sa := w.spec.ServiceAccountName; sa != "" && saCreate && w.kind != "Job" && get[corev1.ServiceAccount](m, sa) == nil {
			t.Errorf("%s %s: serviceAccountName %q is not rendered", w.kind, w.name, sa)
		}
	}
	if es, _ := v["existingSecret"].(string); es == "" && lookupValue(v, "secrets.databaseUrl") == "" {
		notes := ""
		for name, text := range m.render.files {
			if strings.HasSuffix(name, "NOTES.txt") {
				notes = text
			}
		}
		if !strings.Contains(notes, "secrets.databaseUrl") {
			t.Errorf("secrets.databaseUrl is empty and NOTES.txt does not tell the user to set it:\n%s", notes)
		}
	}
	// Prometheus Operator monitors select the release's Services and pods
	// and name ports they have.
	for _, sm := range all[monitoringv1.ServiceMonitor](m) {
		hit := 0
		for _, s := range all[corev1.Service](m) {
			if !selects(t, &sm.Spec.Selector, s.Labels) {
				continue
			}
			hit++
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port named %q", sm.Name, s.Name, ep.Port)
				}
			}
		}
		if hit == 0 {
			t.Errorf("ServiceMonitor %s selects no rendered Service", sm.Name)
		}
	}
	for _, pm := range all[monitoringv1.PodMonitor](m) {
		hit := 0
		for _, w := range wls {
			if !selects(t, &pm.Spec.Selector, w.labels) {
				continue
			}
			hit++
			for _, ep := range pm.Spec.PodMetricsEndpoints {
				if ep.Port == nil || !hasPort(w.spec, intstr.FromString(*ep.Port)) {
					t.Errorf("PodMonitor %s: %s %s has no port named %v", pm.Name, w.kind, w.name, ep.Port)
				}
			}
		}
		if hit == 0 {
			t.Errorf("PodMonitor %s selects no rendered pods", pm.Name)
		}
	}
}

// selects reports whether a label selector matches a label set.
func selects(t *testing.T, sel *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("label selector %v: %v", sel, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(l))
}

// hasPort reports whether some container of spec has the port (by name or
// number).
func hasPort(spec *corev1.PodSpec, p intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return true
			}
		}
	}
	return false
}

// lookupValue walks dotted keys through the coalesced values.
func lookupValue(v map[string]any, path string) any {
	var cur any = v
	for k := range strings.SplitSeq(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

// deployment returns the rendered Deployment <fullname>-<part>, failing
// the test when it is missing.
func deployment(t *testing.T, m *manifests, part string) *appsv1.Deployment {
	t.Helper()
	d := get[appsv1.Deployment](m, fullname+"-"+part)
	if d == nil {
		t.Fatalf("no Deployment %s-%s; rendered:\n%s", fullname, part, kindsOf(m))
	}
	return d
}

// serverEnv returns the server container's environment, resolved: the
// ConfigMap every role reads (<fullname>-config), the server's own, and
// its env entries.
func serverEnv(t *testing.T, m *manifests) map[string]envVal {
	t.Helper()
	d := deployment(t, m, "server")
	c := container(&d.Spec.Template.Spec, "server")
	if c == nil {
		t.Fatalf("Deployment %s has no container named server", d.Name)
	}
	env, err := m.env(*c)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// The server: args, MILLRACE_MIGRATE against the migration Job, and the
// Job itself as a hook after the hook Secret it reads.
func TestServerAndMigrations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		vals    string
		job     bool
		migrate string
	}{
		{"job", "", true, "false"},
		{"in the server", "migrations: {job: {enabled: false}}", false, "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, values(t, tc.vals))
			d := deployment(t, m, "server")
			c := d.Spec.Template.Spec.Containers[0]
			if !slices.Equal(c.Args, []string{"server"}) {
				t.Errorf("server args %q, want [server]", c.Args)
			}
			if containerPort(&c, "http") != 8082 {
				t.Errorf("server: no container port http 8082")
			}
			env := serverEnv(t, m)
			if got := env["MILLRACE_MIGRATE"].value; got != tc.migrate {
				t.Errorf("MILLRACE_MIGRATE = %q, want %q", got, tc.migrate)
			}
			for _, k := range []string{"DATABASE_URL", "MILLRACE_SECRET_KEY"} {
				if env[k].secret == nil {
					t.Errorf("server: %s is not a secretKeyRef", k)
				}
			}
			job := get[batchv1.Job](m, fullname+"-migrate")
			if (job != nil) != tc.job {
				t.Fatalf("migration Job rendered: %v, want %v", job != nil, tc.job)
			}
			if job == nil {
				return
			}
			if got := job.Annotations["helm.sh/hook"]; got != "pre-install,pre-upgrade" {
				t.Errorf("Job hook %q, want pre-install,pre-upgrade", got)
			}
			if got := job.Annotations["helm.sh/hook-delete-policy"]; !strings.Contains(got, "before-hook-creation") {
				t.Errorf("Job hook-delete-policy %q lacks before-hook-creation (a second upgrade would fail on the old Job)", got)
			}
			jc := job.Spec.Template.Spec.Containers[0]
			if !slices.Equal(jc.Args, []string{"migrate", "--ensure-tokens"}) {
				t.Errorf("Job args %q, want [migrate --ensure-tokens]", jc.Args)
			}
			if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever && job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
				t.Errorf("Job restartPolicy %q", job.Spec.Template.Spec.RestartPolicy)
			}
			jenv, err := m.env(jc)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"DATABASE_URL", "MILLRACE_WORKER_TOKEN", "MILLRACE_GATEWAY_TOKEN", "MILLRACE_ADMIN_TOKEN"} {
				if jenv[k].secret == nil {
					t.Errorf("Job: %s is not a secretKeyRef", k)
				}
			}
			// The Job runs before the release's ordinary objects exist: what
			// it reads must be a hook created before it.
			jobWeight := hookWeight(t, job.ObjectMeta)
			for _, ef := range jc.EnvFrom {
				if ef.ConfigMapRef != nil {
					t.Errorf("Job reads ConfigMap %s, which does not exist yet on a first install (not a hook)", ef.ConfigMapRef.Name)
				}
			}
			sec := get[corev1.Secret](m, fullname)
			if sec == nil {
				t.Fatal("no chart Secret")
			}
			if !strings.Contains(sec.Annotations["helm.sh/hook"], "pre-install") || !strings.Contains(sec.Annotations["helm.sh/hook"], "pre-upgrade") {
				t.Errorf("the Secret the Job reads is not a pre-install,pre-upgrade hook (annotations %v)", sec.Annotations)
			}
			if hookWeight(t, sec.ObjectMeta) >= jobWeight {
				t.Errorf("Secret hook weight %d is not lower than the Job's %d", hookWeight(t, sec.ObjectMeta), jobWeight)
			}
			if strings.Contains(sec.Annotations["helm.sh/hook-delete-policy"], "hook-succeeded") {
				t.Errorf("the Secret is deleted when the hooks succeed; the pods need it afterwards")
			}
		})
	}
}

// hookWeight is an object's helm.sh/hook-weight (0 when unset).
func hookWeight(t *testing.T, meta metav1.ObjectMeta) int {
	t.Helper()
	w := meta.Annotations["helm.sh/hook-weight"]
	if w == "" {
		return 0
	}
	n, err := strconv.Atoi(w)
	if err != nil {
		t.Errorf("%s: helm.sh/hook-weight %q is not a number", meta.Name, w)
	}
	return n
}

// Every Millrace Deployment rolls when its configuration or secrets change,
// and only then.
func TestChecksumAnnotations(t *testing.T) {
	t.Parallel()
	// Secrets given, so that no token is generated and two renders of the
	// same values are identical.
	base := values(t, `
secrets:
  databaseUrl: postgres://u:p@db:5432/millrace
  secretKey: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  workerToken: mrt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
  gatewayToken: mrt_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB
  adminToken: mrt_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC
gateway: {enabled: true}
`)
	sums := func(vals map[string]any) map[string][2]string {
		m := renderFresh(t, vals)
		out := map[string][2]string{}
		for _, d := range all[appsv1.Deployment](m) {
			a := d.Spec.Template.Annotations
			if a["checksum/config"] == "" || a["checksum/secret"] == "" {
				t.Errorf("Deployment %s: pod template lacks checksum/config or checksum/secret (annotations %v)", d.Name, a)
			}
			out[d.Name] = [2]string{a["checksum/config"], a["checksum/secret"]}
		}
		return out
	}
	a, b := sums(base), sums(base)
	if len(a) == 0 {
		t.Fatal("no Deployments")
	}
	for name := range a {
		if a[name] != b[name] {
			t.Errorf("%s: checksums differ between two renders of the same values (%v, %v)", name, a[name], b[name])
		}
	}
	// Generated tokens differ at every render without a cluster; the
	// checksums must not follow them, or every `helm template` (a GitOps
	// sync) would roll the pods.
	gen := values(t, "gateway: {enabled: true}")
	g1, g2 := sums(gen), sums(gen)
	for name := range g1 {
		if g1[name] != g2[name] {
			t.Errorf("%s: checksums differ between two renders that generate tokens (%v, %v)", name, g1[name], g2[name])
		}
	}
	cfg := sums(merge(base, values(t, "config: {worker: {NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS: \"25\"}, server: {MILLRACE_LEASE_SECONDS: \"90\"}}")))
	sec := sums(merge(base, values(t, "secrets: {databaseUrl: postgres://u:other@db:5432/millrace}")))
	for name := range a {
		if !strings.Contains(name, "-worker-") && !strings.HasSuffix(name, "-server") {
			continue
		}
		if cfg[name][0] == a[name][0] {
			t.Errorf("%s: checksum/config unchanged after its config changed", name)
		}
		if cfg[name][1] != a[name][1] {
			t.Errorf("%s: checksum/secret changed after a config change", name)
		}
		if sec[name][1] == a[name][1] {
			t.Errorf("%s: checksum/secret unchanged after secrets.databaseUrl changed", name)
		}
	}
}

// The gateway, when enabled: args, port, Service, Ingress to its Service,
// and its settings.
func TestGateway(t *testing.T) {
	t.Parallel()
	vals := setValues(t, "existing-secret")
	m := mustRender(t, vals)
	d := deployment(t, m, "gateway")
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args, []string{"gateway"}) {
		t.Errorf("gateway args %q, want [gateway]", c.Args)
	}
	if containerPort(&c, "http") != 8090 {
		t.Errorf("gateway: no container port http 8090")
	}
	env, err := m.env(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"SERVER_API_URL":       fmt.Sprintf("http://%s-server:8082", fullname),
		"GATEWAY_PUBLIC_URL":   lookupValue(vals, "gateway.publicUrl").(string),
		"CORS_ALLOWED_ORIGINS": lookupValue(vals, "gateway.corsAllowedOrigins").(string),
		"NATS_URL":             fmt.Sprintf("nats://%s-nats:4222", fullname),
	}
	for k, w := range want {
		if env[k].value != w {
			t.Errorf("gateway %s = %q, want %q", k, env[k].value, w)
		}
	}
	if env["MILLRACE_GATEWAY_TOKEN"].secret == nil {
		t.Error("gateway MILLRACE_GATEWAY_TOKEN is not a secretKeyRef")
	}
	// OIDC goes to the servers (the gateway asks /api/auth/config).
	senv := serverEnv(t, m)
	if got := senv["OIDC_ISSUER_URL"].value; got != lookupValue(vals, "auth.oidc.issuerUrl") {
		t.Errorf("server OIDC_ISSUER_URL = %q, want auth.oidc.issuerUrl", got)
	}
	if senv["OIDC_CLIENT_ID"].secret == nil {
		t.Error("server OIDC_CLIENT_ID is not a secretKeyRef")
	}
	ing := get[networkingv1.Ingress](m, fullname+"-gateway")
	if ing == nil {
		t.Fatal("gateway.ingress.enabled but no Ingress")
	}
	svc := get[corev1.Service](m, fullname+"-gateway")
	if svc == nil {
		t.Fatal("no gateway Service")
	}
	for _, r := range ing.Spec.Rules {
		for _, p := range r.HTTP.Paths {
			b := p.Backend.Service
			if b == nil || b.Name != svc.Name || !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
				return sp.Name == b.Port.Name && b.Port.Name != "" || sp.Port == b.Port.Number && b.Port.Number != 0
			}) {
				t.Errorf("Ingress path %s: backend %+v is not a port of Service %s", p.Path, b, svc.Name)
			}
		}
	}
}

// The monitoring extras embed the repository's rules and dashboard.
func TestMonitoringObjects(t *testing.T) {
	t.Parallel()
	m := mustRender(t, setValues(t, "existing-secret"))
	if len(all[monitoringv1.ServiceMonitor](m)) != 1 || len(all[monitoringv1.PodMonitor](m)) != 1 || len(all[monitoringv1.PrometheusRule](m)) != 1 {
		t.Fatalf("want one ServiceMonitor, PodMonitor and PrometheusRule; rendered:\n%s", kindsOf(m))
	}
	pr := all[monitoringv1.PrometheusRule](m)[0]
	alerts := 0
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts++
				if r.Expr.String() == "" {
					t.Errorf("alert %s has no expr", r.Alert)
				}
			}
		}
	}
	if alerts == 0 {
		t.Error("the PrometheusRule holds no alerts")
	}
	// The same rules as the repository's file, after the template's
	// fromYaml/toYaml round trip.
	rulesFile, err := os.ReadFile("../prometheus/millrace-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSONStrict(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var want monitoringv1.PrometheusRuleSpec
	if strict, err := kjson.UnmarshalStrict(j, &want); err != nil || len(strict) > 0 {
		t.Fatalf("deploy/prometheus/millrace-rules.yaml is not a PrometheusRule spec: %v %v", err, strict)
	}
	if !reflect.DeepEqual(pr.Spec, want) {
		// Name the first rule that differs, not two pages of structs.
		got, _ := json.Marshal(pr.Spec)
		exp, _ := json.Marshal(want)
		t.Errorf("the PrometheusRule's spec differs from deploy/prometheus/millrace-rules.yaml (%d groups, want %d)", len(pr.Spec.Groups), len(want.Groups))
		for gi := range min(len(pr.Spec.Groups), len(want.Groups)) {
			g, w := pr.Spec.Groups[gi], want.Groups[gi]
			for ri := range min(len(g.Rules), len(w.Rules)) {
				if !reflect.DeepEqual(g.Rules[ri], w.Rules[ri]) {
					a, _ := json.Marshal(g.Rules[ri])
					b, _ := json.Marshal(w.Rules[ri])
					t.Errorf("group %s rule %d:\n got %s\nwant %s", g.Name, ri, a, b)
				}
			}
		}
		if len(got) < 300 {
			t.Logf("got %s\nwant %s", got, exp)
		}
	}
	dashFile, err := os.ReadFile("../grafana/millrace.json")
	if err != nil {
		t.Fatal(err)
	}
	var wantDash any
	if err := json.Unmarshal(dashFile, &wantDash); err != nil {
		t.Fatalf("deploy/grafana/millrace.json: %v", err)
	}
	dash := 0
	for _, cm := range all[corev1.ConfigMap](m) {
		if cm.Labels["grafana_dashboard"] == "1" {
			dash++
			for k, v := range cm.Data {
				var got any
				if err := json.Unmarshal([]byte(v), &got); !strings.HasSuffix(k, ".json") || err != nil {
					t.Errorf("dashboard ConfigMap %s: key %s is not a JSON file (%v)", cm.Name, k, err)
				} else if !reflect.DeepEqual(got, wantDash) {
					t.Errorf("dashboard ConfigMap %s: %s differs from deploy/grafana/millrace.json", cm.Name, k)
				}
			}
			// The API server's limit for a ConfigMap.
			if size := len(cm.Data["millrace-dashboard.json"]); size > 1<<20 {
				t.Errorf("dashboard ConfigMap %s holds %d bytes; a ConfigMap holds at most 1 MiB", cm.Name, size)
			}
		}
	}
	if dash != 1 {
		t.Errorf("%d ConfigMaps labelled grafana_dashboard=1, want 1", dash)
	}
	// Off by default.
	d := mustRender(t, nil)
	if n := len(all[monitoringv1.ServiceMonitor](d)) + len(all[monitoringv1.PodMonitor](d)) + len(all[monitoringv1.PrometheusRule](d)); n != 0 {
		t.Errorf("defaults render %d Prometheus Operator objects, want none", n)
	}
}

// config.shared reaches every role, config.<role> only that role, and a
// role's map wins over shared (NoETL's config.server.* / config.worker.*).
func TestExtraConfigReachesItsRole(t *testing.T) {
	t.Parallel()
	m := mustRender(t, values(t, `
gateway: {enabled: true}
config:
  shared: {OTEL_SERVICE_NAME: shared, OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:4318"}
  server: {MILLRACE_LEASE_SECONDS: "61", OTEL_SERVICE_NAME: server}
  worker: {NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS: "27"}
  gateway: {OTEL_SERVICE_NAME: gateway}
`))
	want := map[string]map[string]string{ // deployment part -> variable -> value ("" = unset)
		"server":          {"OTEL_SERVICE_NAME": "server", "MILLRACE_LEASE_SECONDS": "61", "NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"},
		"worker-commands": {"OTEL_SERVICE_NAME": "shared", "MILLRACE_LEASE_SECONDS": "", "NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS": "27", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"},
		"gateway":         {"OTEL_SERVICE_NAME": "gateway", "MILLRACE_LEASE_SECONDS": "", "NOETL_WORKER_NATS_FETCH_TIMEOUT_SECONDS": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"},
	}
	for part, vars := range want {
		env, err := m.env(deployment(t, m, part).Spec.Template.Spec.Containers[0])
		if err != nil {
			t.Fatal(err)
		}
		for k, w := range vars {
			if got := env[k].value; got != w {
				t.Errorf("%s: %s = %q, want %q", part, k, got, w)
			}
		}
	}
}

// A config.* key the chart sets in the same ConfigMap itself is refused,
// naming the key: rendered, it would be a duplicate key in the ConfigMap.
func TestExtraConfigCannotShadowTheChart(t *testing.T) {
	t.Parallel()
	base := values(t, `
gateway: {enabled: true, corsAllowedOrigins: "https://app.example.com"}
auth: {oidc: {issuerUrl: "https://login.example.com/", rolesClaim: roles}}
`)
	m := mustRender(t, base)
	maps := map[string]string{"config": "shared", "server": "server", "worker": "worker", "gateway": "gateway"}
	n := 0
	for suffix, key := range maps {
		cm := get[corev1.ConfigMap](m, fullname+"-"+suffix)
		if cm == nil {
			t.Fatalf("no ConfigMap %s-%s", fullname, suffix)
		}
		for k := range cm.Data {
			n++
			path := "config." + key + "." + k
			t.Run(path, func(t *testing.T) {
				t.Parallel()
				_, err := renderChart(t, merge(base, map[string]any{"config": map[string]any{key: map[string]any{k: "x"}}}))
				if err == nil {
					t.Fatalf("%s renders; it duplicates the chart's own %s in ConfigMap %s", path, k, cm.Name)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("the error does not name %s: %v", path, err)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("the chart's ConfigMaps are empty")
	}
}
