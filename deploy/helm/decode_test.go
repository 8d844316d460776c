package helm_test

import (
	"errors"
	"fmt"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kinds maps "apiVersion/kind" to a constructor of the Go type a manifest
// of that kind must decode into. A kind missing here fails the test: the
// chart may only render objects whose schema the tests know.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                               func() any { return new(corev1.Secret) },
	"v1/Service":                              func() any { return new(corev1.Service) },
	"v1/ServiceAccount":                       func() any { return new(corev1.ServiceAccount) },
	"apps/v1/Deployment":                      func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet":                     func() any { return new(appsv1.StatefulSet) },
	"batch/v1/Job":                            func() any { return new(batchv1.Job) },
	"policy/v1/PodDisruptionBudget":           func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return new(networkingv1.NetworkPolicy) },
	"networking.k8s.io/v1/Ingress":            func() any { return new(networkingv1.Ingress) },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(monitoringv1.ServiceMonitor) },
	"monitoring.coreos.com/v1/PodMonitor":     func() any { return new(monitoringv1.PodMonitor) },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return new(monitoringv1.PrometheusRule) },
	"keda.sh/v1alpha1/ScaledObject":           func() any { return new(scaledObject) },
}

// scaledObject mirrors KEDA's keda.sh/v1alpha1 ScaledObject (KEDA v2.x
// ScaledObjectSpec), so that a misspelt field fails as it would against
// KEDA's CRD schema.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef        *scaleTarget   `json:"scaleTargetRef"`
	PollingInterval       *int32         `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32         `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32         `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32         `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32         `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32         `json:"maxReplicaCount,omitempty"`
	Advanced              *kedaAdvanced  `json:"advanced,omitempty"`
	Triggers              []scaleTrigger `json:"triggers"`
	Fallback              *kedaFallback  `json:"fallback,omitempty"`
}

type scaleTarget struct {
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	Name                   string `json:"name"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type kedaAdvanced struct {
	HorizontalPodAutoscalerConfig *struct {
		Name     string                                         `json:"name,omitempty"`
		Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	} `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
}

type kedaFallback struct {
	FailureThreshold int32 `json:"failureThreshold"`
	Replicas         int32 `json:"replicas"`
}

// scaleTrigger's metadata is map[string]string as in KEDA: a number where
// KEDA wants a string (lagThreshold: 10 unquoted) fails to decode.
type scaleTrigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
	MetricType string `json:"metricType,omitempty"`
}

// object is one rendered manifest, decoded.
type object struct {
	file string // the template it came from
	key  string // apiVersion/kind
	obj  any    // *corev1.ConfigMap, *appsv1.Deployment, …
	meta *metav1.ObjectMeta
}

func (o object) String() string { return fmt.Sprintf("%s %s (from %s)", o.key, o.meta.Name, o.file) }

// decodeStrict decodes one YAML manifest into its API type the way the API
// server's strict field validation does: YAML keys must be unique, JSON
// field names must match case-sensitively, and an unknown field, or a
// value of the wrong type (a number for a string), is an error.
func decodeStrict(doc []byte) (string, any, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return "", nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return "", nil, fmt.Errorf("no apiVersion/kind: %w", err)
	}
	key := tm.APIVersion + "/" + tm.Kind
	mk, ok := kinds[key]
	if !ok {
		return key, nil, fmt.Errorf("unknown kind %s: the tests decode only kinds they know (add it to kinds in decode_test.go with its Go type)", key)
	}
	obj := mk()
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return key, nil, fmt.Errorf("%s does not decode into %T: %w", key, obj, err)
	}
	if len(strict) > 0 {
		return key, nil, fmt.Errorf("%s is not a valid %T: %w", key, obj, errors.Join(strict...))
	}
	return key, obj, nil
}

// metaOf returns the ObjectMeta of a decoded object.
func metaOf(obj any) *metav1.ObjectMeta {
	if o, ok := obj.(metav1.ObjectMetaAccessor); ok {
		return o.GetObjectMeta().(*metav1.ObjectMeta)
	}
	if so, ok := obj.(*scaledObject); ok {
		return &so.ObjectMeta
	}
	panic(fmt.Sprintf("no ObjectMeta in %T", obj))
}

// manifests is every object of one render, decoded.
type manifests struct {
	render renderResult
	all    []object
}

// decodeAll decodes every manifest of a render strictly; the first
// failure names the template and the document.
func decodeAll(r renderResult) (*manifests, error) {
	m := &manifests{render: r}
	seen := map[string]string{}
	var errs []error
	for _, file := range manifestFiles(r.files) {
		for i, doc := range splitDocs(r.files[file]) {
			key, obj, err := decodeStrict([]byte(doc))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s, document %d: %w\n%s", file, i+1, err, doc))
				continue
			}
			o := object{file: file, key: key, obj: obj, meta: metaOf(obj)}
			if o.meta.Name == "" {
				errs = append(errs, fmt.Errorf("%s, document %d: %s has no metadata.name", file, i+1, key))
				continue
			}
			id := key + " " + o.meta.Name
			if prev, dup := seen[id]; dup {
				errs = append(errs, fmt.Errorf("%s is rendered twice (%s and %s)", id, prev, file))
			}
			seen[id] = file
			m.all = append(m.all, o)
		}
	}
	return m, errors.Join(errs...)
}

// get returns the object of type T named name, or nil.
func get[T any](m *manifests, name string) *T {
	for _, o := range m.all {
		if t, ok := o.obj.(*T); ok && o.meta.Name == name {
			return t
		}
	}
	return nil
}

// all returns every object of type T.
func all[T any](m *manifests) []*T {
	var out []*T
	for _, o := range m.all {
		if t, ok := o.obj.(*T); ok {
			out = append(out, t)
		}
	}
	return out
}

// workload is a pod template with the name of the object that owns it.
type workload struct {
	kind, name string
	labels     map[string]string // of the pods
	spec       *corev1.PodSpec
	annots     map[string]string // of the pods
}

// workloads returns every pod template the chart renders.
func (m *manifests) workloads() []workload {
	var out []workload
	for _, o := range m.all {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, workload{"Deployment", x.Name, x.Spec.Template.Labels, &x.Spec.Template.Spec, x.Spec.Template.Annotations})
		case *appsv1.StatefulSet:
			out = append(out, workload{"StatefulSet", x.Name, x.Spec.Template.Labels, &x.Spec.Template.Spec, x.Spec.Template.Annotations})
		case *batchv1.Job:
			out = append(out, workload{"Job", x.Name, x.Spec.Template.Labels, &x.Spec.Template.Spec, x.Spec.Template.Annotations})
		}
	}
	return out
}

// envVal is one environment variable of a container as the kubelet
// resolves it: a literal (from env or a ConfigMap), or a Secret reference.
type envVal struct {
	value     string
	secret    *corev1.SecretKeySelector
	fromField bool
	source    string
}

// env resolves a container's environment: envFrom ConfigMaps of the
// render in order, then env entries (later wins, as in the kubelet).
// A ConfigMap the render lacks is an error.
func (m *manifests) env(c corev1.Container) (map[string]envVal, error) {
	out := map[string]envVal{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := get[corev1.ConfigMap](m, ef.ConfigMapRef.Name)
			if cm == nil {
				if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
					continue
				}
				return nil, fmt.Errorf("container %s: envFrom ConfigMap %q is not rendered", c.Name, ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				out[ef.Prefix+k] = envVal{value: v, source: "ConfigMap " + cm.Name}
			}
		case ef.SecretRef != nil:
			return nil, fmt.Errorf("container %s: envFrom Secret %q: the chart names each secret key (secretKeyRef) so that the tests can check them", c.Name, ef.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out[e.Name] = envVal{value: e.Value, source: "env"}
		case e.ValueFrom.SecretKeyRef != nil:
			out[e.Name] = envVal{secret: e.ValueFrom.SecretKeyRef, source: "env"}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := get[corev1.ConfigMap](m, ref.Name)
			if cm == nil {
				return nil, fmt.Errorf("container %s: env %s: ConfigMap %q is not rendered", c.Name, e.Name, ref.Name)
			}
			out[e.Name] = envVal{value: cm.Data[ref.Key], source: "ConfigMap " + cm.Name}
		default:
			out[e.Name] = envVal{fromField: true, source: "env"}
		}
	}
	return out, nil
}

// container returns the container named name of a pod spec.
func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

// containerPort returns the port number of a named container port.
func containerPort(c *corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// kindsOf lists a render's objects, for failure messages.
func kindsOf(m *manifests) string {
	var s []string
	for _, o := range m.all {
		s = append(s, o.key+" "+o.meta.Name)
	}
	return strings.Join(s, "\n")
}
