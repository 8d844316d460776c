package helm_test

import (
	"strings"
	"testing"
)

// The decoder is as strict as the API server's field validation: each
// doctored copy of a rendered worker Deployment must be rejected, naming
// what is wrong, while the original decodes.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	t.Parallel()
	r, err := renderChart(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	var doc string
	for _, file := range manifestFiles(r.files) {
		for _, d := range splitDocs(r.files[file]) {
			if strings.Contains(d, "kind: Deployment") && strings.Contains(d, "name: "+fullname+"-worker-commands\n") {
				doc = d
			}
		}
	}
	if doc == "" {
		t.Fatal("no worker-commands Deployment rendered")
	}
	if _, _, err := decodeStrict([]byte(doc)); err != nil {
		t.Fatalf("the rendered Deployment does not decode: %v", err)
	}
	cases := []struct {
		name, old, new, want string
	}{
		{"misspelt field", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", "terminationGracePeriodSecond"},
		{"field in the wrong case", "imagePullPolicy:", "ImagePullPolicy:", "ImagePullPolicy"},
		{"field at the wrong level", "      containers:", "      replicas: 2\n      containers:", "replicas"},
		{"number where a string goes", `value: ":9090"`, `value: 9090`, "string"},
		{"string where a number goes", "containerPort: 9090", `containerPort: "9090"`, "int32"},
		{"duplicate key", "      containers:", "      hostNetwork: true\n      hostNetwork: false\n      containers:", "hostNetwork"},
		{"unknown kind", "kind: Deployment", "kind: Deploymnet", "unknown kind"},
		{"old API version", "apiVersion: apps/v1", "apiVersion: apps/v1beta1", "unknown kind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(doc, tc.old) {
				t.Fatalf("the rendered Deployment has no %q to doctor:\n%s", tc.old, doc)
			}
			bad := strings.Replace(doc, tc.old, tc.new, 1)
			_, _, err := decodeStrict([]byte(bad))
			if err == nil {
				t.Fatalf("decoded without error after %s (%q → %q)", tc.name, tc.old, tc.new)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// KEDA's trigger metadata is strings only, as in KEDA's CRD.
	so := `apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: x}
  triggers:
    - type: nats-jetstream
      metadata: {stream: S, consumer: C, lagThreshold: 10}
`
	if _, _, err := decodeStrict([]byte(so)); err == nil || !strings.Contains(err.Error(), "string") {
		t.Errorf("a ScaledObject with a numeric lagThreshold decoded (err %v); KEDA wants strings", err)
	}
	if _, _, err := decodeStrict([]byte(strings.Replace(so, "lagThreshold: 10", `lagThreshold: "10"`, 1))); err != nil {
		t.Errorf("a valid ScaledObject does not decode: %v", err)
	}
	if _, _, err := decodeStrict([]byte(strings.Replace(so, "scaleTargetRef", "scaleTargetRefs", 1))); err == nil {
		t.Error("a ScaledObject with a misspelt spec field decoded")
	}
}
