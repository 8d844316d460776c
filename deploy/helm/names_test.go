package helm_test

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Names, labels, ports, environment variables and ConfigMap keys are what
// the API server accepts (decoding checks only the shape), for a short
// release name and for the longest one Helm allows (53 characters).
func TestNamesAreValid(t *testing.T) {
	t.Parallel()
	for _, rel := range []string{release, strings.Repeat("r", 53)} {
		for set, vals := range allSets(t) {
			t.Run(fmt.Sprintf("%s/%d", set, len(rel)), func(t *testing.T) {
				t.Parallel()
				r, err := renderChartAs(t, rel, vals)
				if err != nil {
					t.Fatalf("release %s: %v", rel, err)
				}
				m, err := decodeAll(r)
				if err != nil {
					t.Fatal(err)
				}
				checkNames(t, m)
			})
		}
	}
}

// checkNames applies the API server's name and key rules to a render.
func checkNames(t *testing.T, m *manifests) {
	t.Helper()
	bad := func(what string, errs []string) {
		t.Helper()
		if len(errs) > 0 {
			t.Errorf("%s: %s", what, strings.Join(errs, "; "))
		}
	}
	checkLabels := func(what string, l map[string]string) {
		t.Helper()
		for k, v := range l {
			bad(fmt.Sprintf("%s: label key %q", what, k), validation.IsQualifiedName(k))
			bad(fmt.Sprintf("%s: label %s value %q", what, k, v), validation.IsValidLabelValue(v))
		}
	}
	for _, o := range m.all {
		bad(fmt.Sprintf("%s: name", o), validation.IsDNS1123Subdomain(o.meta.Name))
		checkLabels(o.String(), o.meta.Labels)
		switch x := o.obj.(type) {
		case *corev1.Service:
			bad(fmt.Sprintf("%s: a Service name", o), validation.IsDNS1035Label(x.Name))
		case *appsv1.StatefulSet:
			// Pods are <name>-<ordinal> (a DNS label, their hostname) and
			// carry controller-revision-hash <name>-<10 characters>.
			bad(fmt.Sprintf("%s: its pods' controller-revision-hash label", o), validation.IsValidLabelValue(x.Name+"-0123456789"))
			for _, vct := range x.Spec.VolumeClaimTemplates {
				// Claims are <template>-<statefulset>-<ordinal>.
				bad(fmt.Sprintf("%s: its claims' names", o), validation.IsDNS1123Subdomain(fmt.Sprintf("%s-%s-%d", vct.Name, x.Name, 10)))
			}
		case *batchv1.Job:
			// Its pods carry job-name=<name>.
			bad(fmt.Sprintf("%s: its pods' job-name label", o), validation.IsValidLabelValue(x.Name))
		case *corev1.ConfigMap:
			for k := range x.Data {
				bad(fmt.Sprintf("%s: key %q", o, k), validation.IsConfigMapKey(k))
			}
		case *corev1.Secret:
			for k := range x.Data {
				bad(fmt.Sprintf("%s: key %q", o, k), validation.IsConfigMapKey(k))
			}
		}
	}
	for _, w := range m.workloads() {
		what := w.kind + " " + w.name
		checkLabels(what+" pods", w.labels)
		for _, c := range w.spec.Containers {
			bad(fmt.Sprintf("%s: container name %q", what, c.Name), validation.IsDNS1123Label(c.Name))
			for _, p := range c.Ports {
				bad(fmt.Sprintf("%s: port name %q", what, p.Name), validation.IsValidPortName(p.Name))
			}
			for _, e := range c.Env {
				bad(fmt.Sprintf("%s: env name %q", what, e.Name), validation.IsEnvVarName(e.Name))
			}
		}
	}
}
