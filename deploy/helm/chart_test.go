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

	natsserver "github.com/nats-io/nats-server/v2/server"
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

	"github.com/millrace/millrace/internal/bus"
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
	chartLabel := "millrace-" + m.chartVersion(t)
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

func (m *manifests) chartVersion(t *testing.T) string {
	t.Helper()
	ch := loadChart(t)
	return ch.Metadata.Version
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

// sharedConfig returns the ConfigMap every role reads (<fullname>-config)
// resolved through the server container's environment, which includes it.
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

func natsObjects(m *manifests) []string {
	var out []string
	for _, o := range m.all {
		if o.meta.Labels["app.kubernetes.io/component"] == "nats" || strings.HasPrefix(o.meta.Name, fullname+"-nats") {
			out = append(out, o.String())
		}
	}
	return out
}

func natsStatefulSet(t *testing.T, m *manifests) *appsv1.StatefulSet {
	t.Helper()
	s := get[appsv1.StatefulSet](m, fullname+"-nats")
	if s == nil {
		t.Fatalf("no StatefulSet %s-nats; rendered:\n%s", fullname, kindsOf(m))
	}
	return s
}

// NATS in the release, under every set that deploys it: the seeds'
// invariants (safe-to-evict false, PDB maxUnavailable 0, monitor port 8222
// with its probes) and the storage and clustering each set asks for.
func TestNATSStatefulSet(t *testing.T) {
	t.Parallel()
	cases := []struct {
		set          string
		replicas     int32
		storage      string // NATS_STORAGE
		streamRepl   string // NATS_REPLICAS
		claim        string // volumeClaimTemplates size; "" = none
		storageClass string
	}{
		{set: "defaults", replicas: 1, storage: "memory", streamRepl: "1"},
		{set: "file-store", replicas: 1, storage: "file", streamRepl: "1", claim: "20Gi", storageClass: "standard"},
		{set: "nats-cluster", replicas: 3, storage: "file", streamRepl: "3", claim: "10Gi"},
		{set: "keda", replicas: 1, storage: "memory", streamRepl: "1"},
		{set: "existing-secret", replicas: 1, storage: "memory", streamRepl: "1"},
	}
	for _, tc := range cases {
		t.Run(tc.set, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, setValues(t, tc.set))
			sts := natsStatefulSet(t, m)
			pod := sts.Spec.Template
			if got := pod.Annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"]; got != "false" {
				t.Errorf("NATS pod annotation cluster-autoscaler.kubernetes.io/safe-to-evict = %q, want \"false\"", got)
			}
			if sts.Spec.Replicas == nil || *sts.Spec.Replicas != tc.replicas {
				t.Errorf("NATS replicas = %v, want %d", sts.Spec.Replicas, tc.replicas)
			}
			c := container(&pod.Spec, "nats")
			if c == nil {
				t.Fatalf("StatefulSet %s has no container named nats", sts.Name)
			}
			for name, port := range map[string]int32{"client": 4222, "cluster": 6222, "monitor": 8222} {
				if got := containerPort(c, name); got != port {
					t.Errorf("NATS container port %s = %d, want %d", name, got, port)
				}
			}
			for what, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("NATS %s probe: want an httpGet on the monitor port", what)
					continue
				}
				if pp := p.HTTPGet.Port; !(pp.StrVal == "monitor" || pp.IntVal == 8222) || !strings.HasPrefix(p.HTTPGet.Path, "/healthz") {
					t.Errorf("NATS %s probe: GET %s on port %s, want /healthz… on the monitor port 8222", what, p.HTTPGet.Path, pp.String())
				}
			}
			if !slices.Contains(c.Args, "-js") && !slices.Contains(c.Args, "--jetstream") {
				t.Errorf("NATS args %v: JetStream is not switched on (-js)", c.Args)
			}

			pdb := get[policyv1.PodDisruptionBudget](m, fullname+"-nats")
			if pdb == nil {
				t.Fatalf("no PodDisruptionBudget %s-nats", fullname)
			}
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 0 || pdb.Spec.MaxUnavailable.Type != intstr.Int {
				t.Errorf("NATS PDB maxUnavailable = %v, want 0", pdb.Spec.MaxUnavailable)
			}
			if !selects(t, pdb.Spec.Selector, pod.Labels) {
				t.Errorf("NATS PDB selector %v does not select the NATS pods %v", pdb.Spec.Selector, pod.Labels)
			}

			env := serverEnv(t, m)
			if got := env["NATS_STORAGE"].value; got != tc.storage {
				t.Errorf("NATS_STORAGE = %q, want %q", got, tc.storage)
			}
			if got := env["NATS_REPLICAS"].value; got != tc.streamRepl {
				t.Errorf("NATS_REPLICAS = %q, want %q", got, tc.streamRepl)
			}
			if got, want := env["NATS_URL"].value, fmt.Sprintf("nats://%s-nats:4222", fullname); got != want {
				t.Errorf("NATS_URL = %q, want %q", got, want)
			}
			if got := env["NATS_ENABLED"].value; got != "true" {
				t.Errorf("NATS_ENABLED = %q, want \"true\"", got)
			}
			client := get[corev1.Service](m, fullname+"-nats")
			if client == nil || !slices.ContainsFunc(client.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 4222 }) {
				t.Errorf("NATS_URL's Service %s-nats does not exist or lacks port 4222", fullname)
			}

			vcts := sts.Spec.VolumeClaimTemplates
			if tc.claim == "" {
				if len(vcts) != 0 {
					t.Errorf("memory store: volumeClaimTemplates %v, want none", vcts)
				}
			} else {
				if len(vcts) != 1 {
					t.Fatalf("file store: %d volumeClaimTemplates, want 1", len(vcts))
				}
				vct := vcts[0]
				if got := vct.Spec.Resources.Requests.Storage().String(); got != tc.claim {
					t.Errorf("file store claim size = %s, want %s", got, tc.claim)
				}
				gotClass := ""
				if vct.Spec.StorageClassName != nil {
					gotClass = *vct.Spec.StorageClassName
				}
				if gotClass != tc.storageClass {
					t.Errorf("file store storageClassName = %q, want %q", gotClass, tc.storageClass)
				}
				if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.Name == vct.Name }) {
					t.Errorf("the NATS container does not mount the claim %q", vct.Name)
				}
				if slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vct.Name }) {
					t.Errorf("the pod has a volume named %q too, which shadows the claim", vct.Name)
				}
			}
			checkNATSConfig(t, m, sts, tc.replicas, tc.claim != "")
		})
	}
}

// NetworkPolicy: NATS's client port admits only this release's pods, the
// route port only NATS pods, the monitor port the release's pods and
// nats.networkPolicy.monitorFrom.
func TestNATSNetworkPolicy(t *testing.T) {
	t.Parallel()
	for _, set := range []string{"defaults", "keda", "nats-cluster"} {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, setValues(t, set))
			nps := all[networkingv1.NetworkPolicy](m)
			if len(nps) != 1 {
				t.Fatalf("%d NetworkPolicies, want 1 (for NATS)", len(nps))
			}
			np := nps[0]
			sts := natsStatefulSet(t, m)
			natsPod := peer{ns: namespace, labels: sts.Spec.Template.Labels}
			if !selects(t, &np.Spec.PodSelector, natsPod.labels) {
				t.Fatalf("NetworkPolicy %s selects %v, not the NATS pods %v", np.Name, np.Spec.PodSelector, natsPod.labels)
			}
			if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				t.Errorf("NetworkPolicy %s: policyTypes %v lacks Ingress", np.Name, np.Spec.PolicyTypes)
			}
			var millrace []peer
			for _, w := range m.workloads() {
				if w.kind != "StatefulSet" {
					millrace = append(millrace, peer{ns: namespace, labels: w.labels, name: w.kind + " " + w.name})
				}
			}
			if len(millrace) == 0 {
				t.Fatal("no Millrace workloads")
			}
			nsLabels := map[string]map[string]string{
				namespace:    {"kubernetes.io/metadata.name": namespace},
				"keda":       {"kubernetes.io/metadata.name": "keda"},
				"monitoring": {"kubernetes.io/metadata.name": "monitoring"},
				"elsewhere":  {"kubernetes.io/metadata.name": "elsewhere"},
			}
			strangers := []peer{
				{name: "another app in the namespace", ns: namespace, labels: map[string]string{"app": "other"}},
				{name: "another release of Millrace", ns: namespace, labels: map[string]string{"app.kubernetes.io/name": "millrace", "app.kubernetes.io/instance": "other", "app.kubernetes.io/component": "server"}},
				{name: "a pod labelled like this release in another namespace", ns: "elsewhere", labels: millrace[0].labels},
				{name: "an address outside the cluster", ip: true},
			}
			admits := func(p peer, port int32) bool { return admitted(t, np, nsLabels, p, port) }
			for _, p := range millrace {
				if !admits(p, 4222) {
					t.Errorf("port 4222: %s is not admitted", p.name)
				}
				if admits(p, 6222) {
					t.Errorf("port 6222 (routes): %s is admitted; only NATS pods should be", p.name)
				}
			}
			if !admits(natsPod, 6222) {
				t.Errorf("port 6222 (routes): the NATS pods do not admit each other")
			}
			for _, s := range strangers {
				for _, port := range []int32{4222, 6222, 8222} {
					if admits(s, port) {
						t.Errorf("port %d: %s is admitted", port, s.name)
					}
				}
			}
			// monitorFrom: that namespace reaches 8222 and nothing else.
			if set != "defaults" {
				ns := "keda"
				if set == "nats-cluster" {
					ns = "monitoring"
				}
				scraper := peer{name: "a pod in " + ns, ns: ns, labels: map[string]string{"app": "scraper"}}
				if !admits(scraper, 8222) {
					t.Errorf("port 8222: %s (nats.networkPolicy.monitorFrom) is not admitted", scraper.name)
				}
				if admits(scraper, 4222) || admits(scraper, 6222) {
					t.Errorf("%s (monitorFrom) is admitted to 4222 or 6222; only 8222 is for monitors", scraper.name)
				}
			}
		})
	}
}

// peer is a source of traffic for the NetworkPolicy evaluation.
type peer struct {
	name   string
	ns     string
	labels map[string]string
	ip     bool // an address outside the cluster
}

// admitted evaluates a NetworkPolicy's ingress rules for traffic from p to
// TCP port on the selected pods, with Kubernetes' semantics: a rule with no
// from admits every source, no ports every port; a podSelector alone is
// the policy's namespace.
func admitted(t *testing.T, np *networkingv1.NetworkPolicy, nsLabels map[string]map[string]string, p peer, port int32) bool {
	t.Helper()
	for _, r := range np.Spec.Ingress {
		portOK := len(r.Ports) == 0
		for _, rp := range r.Ports {
			if rp.Protocol != nil && *rp.Protocol != corev1.ProtocolTCP {
				continue
			}
			if rp.Port == nil {
				portOK = true
				continue
			}
			if rp.Port.Type == intstr.String {
				// A named port: the NATS container's names.
				named := map[string]int32{"client": 4222, "cluster": 6222, "monitor": 8222}
				if named[rp.Port.StrVal] == port {
					portOK = true
				}
				continue
			}
			end := rp.Port.IntVal
			if rp.EndPort != nil {
				end = *rp.EndPort
			}
			if port >= rp.Port.IntVal && port <= end {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(r.From) == 0 {
			return true
		}
		for _, f := range r.From {
			if f.IPBlock != nil {
				if p.ip {
					return true
				}
				continue
			}
			if p.ip {
				continue
			}
			nsOK := p.ns == np.Namespace || (np.Namespace == "" && p.ns == namespace)
			if f.NamespaceSelector != nil {
				nsOK = selectsOrAll(t, f.NamespaceSelector, nsLabels[p.ns])
			}
			podOK := true
			if f.PodSelector != nil {
				podOK = selectsOrAll(t, f.PodSelector, p.labels)
			}
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// selectsOrAll is selects where an empty selector matches everything, as
// in NetworkPolicy peers.
func selectsOrAll(t *testing.T, sel *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("label selector %v: %v", sel, err)
		return false
	}
	return s.Matches(labels.Set(l))
}

// With nats.enabled=false the release renders no NATS objects and every
// role gets the external URL.
func TestExternalNATS(t *testing.T) {
	t.Parallel()
	vals := setValues(t, "external-nats")
	m := mustRender(t, vals)
	if objs := natsObjects(m); len(objs) != 0 {
		t.Errorf("nats.enabled=false still renders NATS objects:\n%s", strings.Join(objs, "\n"))
	}
	want, _ := lookupValue(vals, "nats.external.url").(string)
	if want == "" {
		t.Fatal("ci/external-nats.yaml sets no nats.external.url")
	}
	for _, w := range m.workloads() {
		for _, c := range w.spec.Containers {
			env, err := m.env(c)
			if err != nil {
				t.Fatal(err)
			}
			if w.kind == "Job" {
				continue // the migration Job does not talk to NATS
			}
			if got := env["NATS_URL"].value; got != want {
				t.Errorf("%s %s: NATS_URL = %q, want nats.external.url %q", w.kind, w.name, got, want)
			}
			if env["NATS_USER"].secret == nil || env["NATS_PASSWORD"].secret == nil {
				t.Errorf("%s %s: NATS_USER and NATS_PASSWORD must come from the Secret", w.kind, w.name)
			}
		}
	}
	if got := serverEnv(t, m)["NATS_REPLICAS"].value; got != "1" {
		t.Errorf("NATS_REPLICAS = %q with an external NATS and no nats.streamReplicas, want \"1\"", got)
	}
	// streamReplicas is a setting of its own for an external cluster.
	m = mustRender(t, merge(vals, values(t, "nats: {streamReplicas: 3}")))
	if got := serverEnv(t, m)["NATS_REPLICAS"].value; got != "3" {
		t.Errorf("NATS_REPLICAS = %q with nats.streamReplicas 3, want \"3\"", got)
	}
}

// poolValues is a worker pool as the chart sees it after workers.defaults.
type poolValues struct {
	name, stream, routing    string
	routed                   bool
	replicas, concurrency    int
	grace, termGrace         int
	keda, hpa, pdb           bool
	lag, activationLag       int
	minReplicas, maxReplicas int
}

// pools reads the pools of the coalesced values, defaults applied the
// way values.yaml documents (a pool's keys win over workers.defaults).
func pools(t *testing.T, v map[string]any) []poolValues {
	t.Helper()
	defs, _ := lookupValue(v, "workers.defaults").(map[string]any)
	list, _ := lookupValue(v, "workers.pools").([]any)
	var out []poolValues
	for _, raw := range list {
		p := merge(defs, raw.(map[string]any))
		num := func(path string) int {
			switch x := lookupValue(p, path).(type) {
			case float64:
				return int(x)
			case int64:
				return int(x)
			case int:
				return x
			}
			t.Fatalf("pool %v: %s is %T, want a number", p["name"], path, lookupValue(p, path))
			return 0
		}
		b := func(path string) bool { x, _ := lookupValue(p, path).(bool); return x }
		s := func(path string) string { x, _ := lookupValue(p, path).(string); return x }
		pv := poolValues{
			name: s("name"), stream: s("stream"), routed: b("routed"), routing: s("routing"),
			replicas: num("replicaCount"), concurrency: num("concurrency"),
			grace: num("shutdownGraceSeconds"), termGrace: num("terminationGracePeriodSeconds"),
			keda: b("autoscaling.keda.enabled"), hpa: b("autoscaling.hpa.enabled"), pdb: b("pdb.enabled"),
		}
		if pv.keda {
			pv.lag, pv.activationLag = num("autoscaling.keda.lagThreshold"), num("autoscaling.keda.activationLagThreshold")
			pv.minReplicas, pv.maxReplicas = num("autoscaling.keda.minReplicaCount"), num("autoscaling.keda.maxReplicaCount")
		}
		out = append(out, pv)
	}
	return out
}

// Each pool: `worker --stream X`, its environment, a grace period longer
// than the worker's shutdown grace, no preStop, its PDB, its probes.
func TestWorkerPools(t *testing.T) {
	t.Parallel()
	for set, vals := range allSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, vals)
			ps := pools(t, m.render.values)
			if len(ps) == 0 {
				t.Fatal("no worker pools in the values")
			}
			natsEnabled := lookupValue(m.render.values, "server.natsEnabled") == true
			if got := serverEnv(t, m)["NATS_ENABLED"].value; got != strconv.FormatBool(natsEnabled) {
				t.Errorf("NATS_ENABLED = %q, want server.natsEnabled (%v)", got, natsEnabled)
			}
			secretName := fullname
			if es, _ := m.render.values["existingSecret"].(string); es != "" {
				secretName = es
			}
			rendered := 0
			for _, p := range ps {
				if p.stream != "commands" && !natsEnabled {
					continue // query pools only run with server.natsEnabled
				}
				rendered++
				d := deployment(t, m, "worker-"+p.name)
				spec := &d.Spec.Template.Spec
				if len(spec.Containers) != 1 {
					t.Fatalf("%s: %d containers, want 1", d.Name, len(spec.Containers))
				}
				c := spec.Containers[0]
				if want := []string{"worker", "--stream", p.stream}; !slices.Equal(c.Args, want) {
					t.Errorf("%s: args %q, want %q", d.Name, c.Args, want)
				}
				env, err := m.env(c)
				if err != nil {
					t.Fatal(err)
				}
				wantEnv := map[string]string{
					"MILLRACE_WORKER_STREAM":          p.stream,
					"NATS_WORKER_CONCURRENCY":         strconv.Itoa(p.concurrency),
					"MILLRACE_SHUTDOWN_GRACE_SECONDS": strconv.Itoa(p.grace),
					"MILLRACE_WORKER_METRICS_ADDR":    ":9090",
				}
				for k, want := range wantEnv {
					if got := env[k]; got.secret != nil || got.value != want {
						t.Errorf("%s: %s = %q, want %q", d.Name, k, got.value, want)
					}
				}
				wantPool := ""
				if p.routed {
					wantPool = p.name
					if p.routing != "" {
						wantPool = p.routing
					}
				}
				if got := env["MILLRACE_WORKER_POOL"].value; got != wantPool {
					t.Errorf("%s: MILLRACE_WORKER_POOL = %q, want %q (routed %v)", d.Name, got, wantPool, p.routed)
				}
				tok := env["MILLRACE_WORKER_TOKEN"]
				if tok.secret == nil || tok.secret.Name != secretName || tok.secret.Key != "MILLRACE_WORKER_TOKEN" {
					t.Errorf("%s: MILLRACE_WORKER_TOKEN must be a secretKeyRef to %s/MILLRACE_WORKER_TOKEN, got %+v", d.Name, secretName, tok)
				}
				if tok.secret != nil && tok.secret.Optional != nil && *tok.secret.Optional {
					t.Errorf("%s: MILLRACE_WORKER_TOKEN is optional; a worker without it cannot claim work", d.Name)
				}
				if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != int64(p.termGrace) {
					t.Errorf("%s: terminationGracePeriodSeconds = %v, want %d", d.Name, spec.TerminationGracePeriodSeconds, p.termGrace)
				} else if *spec.TerminationGracePeriodSeconds <= int64(p.grace) {
					t.Errorf("%s: terminationGracePeriodSeconds %d is not greater than MILLRACE_SHUTDOWN_GRACE_SECONDS %d", d.Name, *spec.TerminationGracePeriodSeconds, p.grace)
				}
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
					t.Errorf("%s: has a preStop hook", d.Name)
				}
				if containerPort(&c, "metrics") != 9090 {
					t.Errorf("%s: no container port metrics 9090 (MILLRACE_WORKER_METRICS_ADDR)", d.Name)
				}
				for what, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
					if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Port.String() != "metrics" {
						t.Errorf("%s: %s probe must be an httpGet on port metrics, got %+v", d.Name, what, pr)
					}
				}
				autoscaled := p.keda || p.hpa
				if !autoscaled && (d.Spec.Replicas == nil || int(*d.Spec.Replicas) != p.replicas) {
					t.Errorf("%s: replicas %v, want %d", d.Name, d.Spec.Replicas, p.replicas)
				}
				if autoscaled && d.Spec.Replicas != nil {
					t.Errorf("%s: replicas set although the pool autoscales", d.Name)
				}
				pdb := get[policyv1.PodDisruptionBudget](m, d.Name)
				if p.pdb != (pdb != nil) {
					t.Errorf("%s: pdb.enabled %v but PDB rendered: %v", d.Name, p.pdb, pdb != nil)
				}
				if pdb != nil && !selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
					t.Errorf("PDB %s does not select the pool's pods", pdb.Name)
				}
				if p.hpa != (get[autoscalingv2.HorizontalPodAutoscaler](m, d.Name) != nil) {
					t.Errorf("%s: hpa.enabled %v but HPA rendered: %v", d.Name, p.hpa, !p.hpa)
				}
				if p.keda != (get[scaledObject](m, d.Name) != nil) {
					t.Errorf("%s: keda.enabled %v but ScaledObject rendered: %v", d.Name, p.keda, !p.keda)
				}
			}
			var deps []string
			for _, d := range all[appsv1.Deployment](m) {
				if strings.HasPrefix(d.Name, fullname+"-worker-") {
					deps = append(deps, d.Name)
				}
			}
			if len(deps) != rendered {
				t.Errorf("worker Deployments %v, want one per pool (%d)", deps, rendered)
			}
		})
	}
}

// KEDA: one ScaledObject per pool with keda on, nats-jetstream triggers on
// the stream and durable the workers of that pool consume, named as
// internal/bus names them.
func TestKEDAScaledObjects(t *testing.T) {
	t.Parallel()
	for _, set := range []string{"keda", "external-nats+keda"} {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			vals := setValues(t, "keda")
			wantEndpoint := fmt.Sprintf("%s-nats-headless.%s.svc.cluster.local:8222", fullname, namespace)
			if set != "keda" {
				vals = merge(vals, setValues(t, "external-nats"))
				wantEndpoint, _ = lookupValue(vals, "nats.external.monitoringEndpoint").(string)
			}
			m := mustRender(t, vals)
			ps := pools(t, m.render.values)
			nKeda := 0
			for _, p := range ps {
				if !p.keda {
					continue
				}
				nKeda++
				so := get[scaledObject](m, fullname+"-worker-"+p.name)
				if so == nil {
					t.Errorf("pool %s: no ScaledObject", p.name)
					continue
				}
				if so.Spec.MinReplicaCount == nil || int(*so.Spec.MinReplicaCount) != p.minReplicas ||
					so.Spec.MaxReplicaCount == nil || int(*so.Spec.MaxReplicaCount) != p.maxReplicas {
					t.Errorf("pool %s: min/max replicas %v/%v, want %d/%d", p.name, so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount, p.minReplicas, p.maxReplicas)
				}
				stream, durable := kedaTarget(p)
				if len(so.Spec.Triggers) == 0 {
					t.Fatalf("pool %s: ScaledObject has no triggers", p.name)
				}
				first := so.Spec.Triggers[0]
				if first.Type != "nats-jetstream" {
					t.Errorf("pool %s: trigger type %q, want nats-jetstream", p.name, first.Type)
				}
				if first.Metadata["stream"] != stream || first.Metadata["consumer"] != durable {
					t.Errorf("pool %s: first trigger on %s/%s, want the pool's durable %s/%s", p.name, first.Metadata["stream"], first.Metadata["consumer"], stream, durable)
				}
				for i, tr := range so.Spec.Triggers {
					md := tr.Metadata
					if tr.Type != "nats-jetstream" || md["natsServerMonitoringEndpoint"] != wantEndpoint || md["account"] != "$G" || md["stream"] != stream {
						t.Errorf("pool %s trigger %d: %s %v; want nats-jetstream, endpoint %s, account $G, stream %s", p.name, i, tr.Type, md, wantEndpoint, stream)
					}
					if !slices.Contains(consumersOf(p), md["consumer"]) {
						t.Errorf("pool %s trigger %d: consumer %q is not one the pool's workers consume (%v)", p.name, i, md["consumer"], consumersOf(p))
					}
					if md["lagThreshold"] != strconv.Itoa(p.lag) || md["activationLagThreshold"] != strconv.Itoa(p.activationLag) {
						t.Errorf("pool %s trigger %d: lagThreshold %q activationLagThreshold %q, want %d and %d", p.name, i, md["lagThreshold"], md["activationLagThreshold"], p.lag, p.activationLag)
					}
				}
				// The monitor endpoint of the in-release NATS is a Service
				// of the release that has port 8222.
				if set == "keda" {
					host, _, _ := strings.Cut(wantEndpoint, ".")
					s := get[corev1.Service](m, host)
					if s == nil || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 8222 }) {
						t.Errorf("KEDA's monitor endpoint %s: no rendered Service %s with port 8222", wantEndpoint, host)
					}
				}
			}
			if nKeda == 0 {
				t.Fatal("ci/keda.yaml turns KEDA on for no pool")
			}
			if got := len(all[scaledObject](m)); got != nKeda {
				t.Errorf("%d ScaledObjects, want %d", got, nKeda)
			}
		})
	}
}

// kedaTarget is the stream and main durable a pool's workers consume, by
// internal/bus's names (the chart's streams.* defaults must equal them).
func kedaTarget(p poolValues) (stream, durable string) {
	switch p.stream {
	case "commands":
		if p.routed {
			r := p.name
			if p.routing != "" {
				r = p.routing
			}
			return bus.DefaultStream, bus.PoolConsumer(bus.DefaultConsumer, r)
		}
		return bus.DefaultStream, bus.DefaultConsumer
	case "warehouse":
		return bus.DefaultQueryStream, bus.DefaultQueryConsumer
	case "pre-aggregate":
		return bus.DefaultPreAggStream, bus.DefaultPreAggConsumer
	}
	return "", ""
}

// consumersOf lists every durable a pool's workers read.
func consumersOf(p poolValues) []string {
	_, main := kedaTarget(p)
	switch p.stream {
	case "warehouse":
		return []string{main, bus.DefaultQueryConsumer + bus.QueryInteractiveSuffix}
	case "pre-aggregate":
		return []string{main, bus.DefaultPreAggConsumer + bus.PreAggBuildConsumerSuffix}
	}
	return []string{main}
}

// The stream names every role gets are internal/bus's defaults, which the
// KEDA triggers rely on.
func TestStreamNamesMatchBus(t *testing.T) {
	t.Parallel()
	env := serverEnv(t, mustRender(t, nil))
	want := map[string]string{
		"NATS_STREAM":             bus.DefaultStream,
		"NATS_SUBJECT":            bus.DefaultSubject,
		"NATS_CONSUMER":           bus.DefaultConsumer,
		"MILLRACE_QUERY_STREAM":   bus.DefaultQueryStream,
		"MILLRACE_QUERY_SUBJECT":  bus.DefaultQuerySubject,
		"MILLRACE_QUERY_CONSUMER": bus.DefaultQueryConsumer,
		"PRE_AGGREGATE_STREAM":    bus.DefaultPreAggStream,
		"PRE_AGGREGATE_CONSUMER":  bus.DefaultPreAggConsumer,
	}
	for k, w := range want {
		if got := env[k]; got.value != w {
			t.Errorf("%s = %q, want internal/bus's %q (the KEDA triggers and every role must agree)", k, got.value, w)
		}
	}
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
	cfg := sums(merge(base, values(t, "config: {worker: {NOETL_WORKER_NATS_MAX_ACK_PENDING: \"256\"}, server: {MILLRACE_LEASE_SECONDS: \"90\"}}")))
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

// existingSecret: the chart renders no Secret and every secret reference
// names the existing one; nothing secret is ever rendered outside a
// Secret.
func TestSecretsStayInSecrets(t *testing.T) {
	t.Parallel()
	t.Run("existingSecret", func(t *testing.T) {
		t.Parallel()
		vals := setValues(t, "existing-secret")
		m := mustRender(t, vals)
		name, _ := vals["existingSecret"].(string)
		if name == "" {
			t.Fatal("ci/existing-secret.yaml sets no existingSecret")
		}
		if s := all[corev1.Secret](m); len(s) != 0 {
			t.Errorf("existingSecret set but the chart renders %d Secrets", len(s))
		}
		refs := 0
		for _, w := range m.workloads() {
			for _, c := range w.spec.Containers {
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						refs++
						if e.ValueFrom.SecretKeyRef.Name != name {
							t.Errorf("%s %s: %s reads Secret %q, want existingSecret %q", w.kind, w.name, e.Name, e.ValueFrom.SecretKeyRef.Name, name)
						}
					}
				}
			}
		}
		if refs == 0 {
			t.Error("no secretKeyRef at all")
		}
		creds, _ := lookupValue(vals, "natsCredentials.existingSecret").(string)
		if creds != "" {
			for _, w := range m.workloads() {
				if w.kind == "StatefulSet" || w.kind == "Job" {
					continue
				}
				c := w.spec.Containers[0]
				env, _ := m.env(c)
				mounted := false
				for _, vol := range w.spec.Volumes {
					if vol.Secret != nil && vol.Secret.SecretName == creds {
						for _, vm := range c.VolumeMounts {
							if vm.Name == vol.Name && strings.HasPrefix(env["NATS_CREDS"].value, vm.MountPath+"/") {
								mounted = true
							}
						}
					}
				}
				if !mounted {
					t.Errorf("%s %s: natsCredentials Secret %s is not mounted where NATS_CREDS (%q) points", w.kind, w.name, creds, env["NATS_CREDS"].value)
				}
			}
		}
	})
	t.Run("no secret outside a Secret", func(t *testing.T) {
		t.Parallel()
		secrets := map[string]string{
			"databaseUrl":  "postgres://millrace:pw-Db-7f3a9c@db:5432/millrace",
			"secretKey":    "7f3a9c0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
			"workerToken":  "mrt_" + strings.Repeat("Worker", 8)[:43],
			"gatewayToken": "mrt_" + strings.Repeat("Gateway", 7)[:43],
			"adminToken":   "mrt_" + strings.Repeat("Admin", 9)[:43],
			"natsUser":     "nats-user-7f3a9c",
			"natsPassword": "nats-pw-7f3a9c",
			"oidcClientId": "oidc-client-7f3a9c",
		}
		sv := map[string]any{}
		for k, v := range secrets {
			sv[k] = v
		}
		m := mustRender(t, merge(values(t, "gateway: {enabled: true}\nauth: {oidc: {issuerUrl: https://login.example.com/}}"), map[string]any{"secrets": sv}))
		sec := get[corev1.Secret](m, fullname)
		if sec == nil {
			t.Fatal("no chart Secret")
		}
		for _, o := range m.all {
			if _, isSecret := o.obj.(*corev1.Secret); isSecret {
				continue
			}
			doc := fmt.Sprintf("%+v", o.obj)
			for k, v := range secrets {
				if strings.Contains(doc, v) {
					t.Errorf("%s contains secrets.%s", o, k)
				}
			}
		}
		for k, v := range secrets {
			found := false
			for _, d := range sec.Data {
				if string(d) == v {
					found = true
				}
			}
			if !found {
				t.Errorf("secrets.%s is not in the chart's Secret", k)
			}
		}
	})
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

// checkNATSConfig parses the rendered nats.conf with nats-server's own
// config parser (as the pod does at start) and checks what the values ask
// for: the monitor port, JetStream limits, the store directory on the data
// volume, and for a cluster the routes to every pod through the headless
// Service.
func checkNATSConfig(t *testing.T, m *manifests, sts *appsv1.StatefulSet, replicas int32, fileStore bool) {
	t.Helper()
	spec := &sts.Spec.Template.Spec
	c := container(spec, "nats")
	// The config file: the --config/-c argument, from a mounted ConfigMap.
	var path string
	for i, a := range c.Args {
		if (a == "--config" || a == "-c") && i+1 < len(c.Args) {
			path = c.Args[i+1]
		}
	}
	if path == "" {
		t.Fatalf("NATS args %v name no --config file", c.Args)
	}
	var conf string
	for _, vm := range c.VolumeMounts {
		if !strings.HasPrefix(path, vm.MountPath+"/") {
			continue
		}
		for _, vol := range spec.Volumes {
			if vol.Name == vm.Name && vol.ConfigMap != nil {
				cm := get[corev1.ConfigMap](m, vol.ConfigMap.Name)
				if cm != nil {
					conf = cm.Data[strings.TrimPrefix(path, vm.MountPath+"/")]
				}
			}
		}
	}
	if conf == "" {
		t.Fatalf("NATS config %s is not in a rendered ConfigMap mounted there", path)
	}
	// The kubelet sets the pod's environment; the parser reads variables
	// from the process environment, so expand the ones the pod defines.
	env, err := m.env(*c)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		val := v.value
		if v.fromField {
			val = sts.Name + "-0" // metadata.name of the first pod
		}
		conf = strings.ReplaceAll(conf, "$"+k, val)
	}
	opts := &natsserver.Options{}
	if err := opts.ProcessConfigString(conf); err != nil {
		t.Fatalf("nats-server rejects the rendered %s: %v\n%s", path, err, conf)
	}
	if opts.HTTPPort != 8222 {
		t.Errorf("nats.conf http_port = %d, want 8222 (the monitor port)", opts.HTTPPort)
	}
	if opts.Port != 0 && opts.Port != 4222 {
		t.Errorf("nats.conf port = %d, want 4222", opts.Port)
	}
	if want := int64(1 << 30); opts.JetStreamMaxMemory != want {
		t.Errorf("nats.conf max_memory_store = %d, want %d (nats.jetstream.memoryStore.maxSize 1Gi)", opts.JetStreamMaxMemory, want)
	}
	if fileStore {
		claim := sts.Spec.VolumeClaimTemplates[0]
		if want := claim.Spec.Resources.Requests.Storage().Value(); opts.JetStreamMaxStore != want {
			t.Errorf("nats.conf max_file_store = %d, want the claim's %d", opts.JetStreamMaxStore, want)
		}
		mounted := false
		for _, vm := range c.VolumeMounts {
			if vm.Name == claim.Name && (opts.StoreDir == vm.MountPath || strings.HasPrefix(opts.StoreDir, vm.MountPath+"/")) {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("nats.conf store_dir %q is not on the claim %q", opts.StoreDir, claim.Name)
		}
	}
	if replicas == 1 {
		if len(opts.Routes) != 0 || opts.Cluster.Port != 0 {
			t.Errorf("a single NATS has a cluster block (port %d, routes %v)", opts.Cluster.Port, opts.Routes)
		}
		return
	}
	if opts.Cluster.Port != 6222 || opts.Cluster.Name == "" {
		t.Errorf("nats.conf cluster: port %d name %q, want 6222 and a name", opts.Cluster.Port, opts.Cluster.Name)
	}
	var got []string
	for _, u := range opts.Routes {
		got = append(got, u.String())
	}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("nats://%s-%d.%s:6222", sts.Name, i, sts.Spec.ServiceName))
	}
	if !slices.Equal(got, want) {
		t.Errorf("nats.conf routes %v, want %v", got, want)
	}
	hs := get[corev1.Service](m, sts.Spec.ServiceName)
	if hs == nil || hs.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the routes' Service %s is not a rendered headless Service", sts.Spec.ServiceName)
	} else {
		for _, port := range []int32{4222, 6222, 8222} {
			if !slices.ContainsFunc(hs.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port }) {
				t.Errorf("headless Service %s lacks port %d", hs.Name, port)
			}
		}
	}
}

// Each role reads its secret settings from the Secret (the chart's or
// existingSecret), under the key named like the variable.
func TestSecretKeysPerRole(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"server":          {"DATABASE_URL", "MILLRACE_SECRET_KEY", "OIDC_CLIENT_ID", "NATS_USER", "NATS_PASSWORD"},
		"gateway":         {"MILLRACE_GATEWAY_TOKEN", "NATS_USER", "NATS_PASSWORD"},
		"worker-commands": {"MILLRACE_WORKER_TOKEN", "NATS_USER", "NATS_PASSWORD"},
		"migrate":         {"DATABASE_URL", "MILLRACE_WORKER_TOKEN", "MILLRACE_GATEWAY_TOKEN", "MILLRACE_ADMIN_TOKEN"},
	}
	for _, set := range []string{"defaults", "existing-secret"} {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			vals := merge(setValues(t, set), values(t, "gateway: {enabled: true}"))
			m := mustRender(t, vals)
			secret := fullname
			if es, _ := vals["existingSecret"].(string); es != "" {
				secret = es
			}
			for part, keys := range want {
				var spec *corev1.PodSpec
				if part == "migrate" {
					j := get[batchv1.Job](m, fullname+"-migrate")
					if j == nil {
						t.Fatal("no migration Job")
					}
					spec = &j.Spec.Template.Spec
				} else {
					spec = &deployment(t, m, part).Spec.Template.Spec
				}
				env, err := m.env(spec.Containers[0])
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range keys {
					ref := env[k].secret
					if ref == nil || ref.Name != secret || ref.Key != k {
						t.Errorf("%s: %s is not read from Secret %s key %s (got %+v)", part, k, secret, k, env[k])
					}
				}
			}
		})
	}
}
