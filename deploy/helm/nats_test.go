package helm_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// natsObjects lists the objects of a render that belong to NATS.
func natsObjects(m *manifests) []string {
	var out []string
	for _, o := range m.all {
		if o.meta.Labels["app.kubernetes.io/component"] == "nats" || strings.HasPrefix(o.meta.Name, fullname+"-nats") {
			out = append(out, o.String())
		}
	}
	return out
}

// natsStatefulSet returns the NATS StatefulSet, failing the test without one.
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
			checkNATSConfig(t, m, sts, tc.replicas, tc.claim != "", 1<<30)
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
	// The storage of the streams on an external NATS is its own setting:
	// memory by default, file when asked (the in-chart file store's switch
	// does not reach an external NATS).
	if got := serverEnv(t, m)["NATS_STORAGE"].value; got != "memory" {
		t.Errorf("NATS_STORAGE = %q with an external NATS by default, want memory", got)
	}
	fm := mustRender(t, merge(vals, values(t, "nats: {external: {storage: file}}")))
	if got := serverEnv(t, fm)["NATS_STORAGE"].value; got != "file" {
		t.Errorf("NATS_STORAGE = %q with nats.external.storage=file, want file", got)
	}
	if _, err := renderChart(t, merge(vals, values(t, "nats: {external: {storage: disk}}"))); err == nil {
		t.Error("nats.external.storage=disk renders; the schema must allow only memory or file")
	}
	// streamReplicas is a setting of its own for an external cluster.
	m = mustRender(t, merge(vals, values(t, "nats: {streamReplicas: 3}")))
	if got := serverEnv(t, m)["NATS_REPLICAS"].value; got != "3" {
		t.Errorf("NATS_REPLICAS = %q with nats.streamReplicas 3, want \"3\"", got)
	}
}

// checkNATSConfig parses the rendered nats.conf with nats-server's own
// config parser (as the pod does at start) and checks what the values ask
// for: the monitor port, JetStream limits, the store directory on the data
// volume, and for a cluster the routes to every pod through the headless
// Service.
//
// wantMem is the max_memory_store the values ask for.
func checkNATSConfig(t *testing.T, m *manifests, sts *appsv1.StatefulSet, replicas int32, fileStore bool, wantMem int64) {
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
	if opts.JetStreamMaxMemory != wantMem {
		t.Errorf("nats.conf max_memory_store = %d, want %d", opts.JetStreamMaxMemory, wantMem)
	}
	if !fileStore {
		// The store on an emptyDir: JetStream must refuse writes before the
		// kubelet evicts the pod for going over the sizeLimit.
		var limit int64
		for _, vm := range c.VolumeMounts {
			if opts.StoreDir != vm.MountPath && !strings.HasPrefix(opts.StoreDir, vm.MountPath+"/") {
				continue
			}
			for _, vol := range spec.Volumes {
				if vol.Name == vm.Name && vol.EmptyDir != nil && vol.EmptyDir.SizeLimit != nil {
					limit = vol.EmptyDir.SizeLimit.Value()
				}
			}
		}
		if limit == 0 {
			t.Errorf("nats.conf store_dir %q is on no emptyDir with a sizeLimit", opts.StoreDir)
		} else if got := opts.JetStreamMaxStore; got <= 0 || got >= limit || got < limit*8/10 {
			t.Errorf("nats.conf max_file_store = %d with the emptyDir's sizeLimit %d; want below it (about 90%%)", got, limit)
		}
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

// memoryStore.enabled=false must not render max_memory_store 0, which
// nats-server takes as "75% of the host's memory": a small fixed size. A
// fractional file store size still gives an emptyDir store limit below the
// volume's sizeLimit.
func TestNATSStoreLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		vals    string
		wantMem int64
	}{
		{"nats: {jetstream: {memoryStore: {enabled: false}}}", 64 << 20},
		{"nats: {jetstream: {memoryStore: {maxSize: 512Mi}, fileStore: {size: 1.5Gi}}}", 512 << 20},
		{"nats: {jetstream: {fileStore: {size: 2G}}}", 1 << 30},
	}
	for _, tc := range cases {
		m := mustRender(t, values(t, tc.vals))
		checkNATSConfig(t, m, natsStatefulSet(t, m), 1, false, tc.wantMem)
	}
}
