package helm_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// Every pod the chart renders, NATS and the migration Job included, meets
// the restricted Pod Security Standard, as the admission controller
// evaluates it (k8s.io/pod-security-admission's own checks), so the release
// installs into a namespace labelled pod-security.kubernetes.io/enforce:
// restricted.
func TestPodsMeetRestrictedPodSecurity(t *testing.T) {
	t.Parallel()
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}
	for set, vals := range allSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, vals)
			for _, w := range m.workloads() {
				meta := metav1.ObjectMeta{Name: w.name, Namespace: namespace, Labels: w.labels, Annotations: w.annots}
				res := policy.AggregateCheckResults(eval.EvaluatePod(lv, &meta, w.spec))
				if !res.Allowed {
					t.Errorf("%s %s violates the restricted Pod Security Standard: %s: %s", w.kind, w.name, res.ForbiddenReason(), res.ForbiddenDetail())
				}
			}
		})
	}
}
