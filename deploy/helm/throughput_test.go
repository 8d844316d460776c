package helm_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// max_ack_pending caps the jobs a whole commands pool runs at once, so the
// chart sets it (in the shared ConfigMap: servers and workers reconcile the
// durables with it and must agree) to what the largest commands pool can
// run: its most replicas x concurrency, unless streams.commands.maxAckPending
// says otherwise.
func TestMaxAckPendingFollowsTheCommandsPools(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, vals, want string
	}{
		{"defaults: 2 x 100", "", "200"},
		{"replicas", "workers: {defaults: {replicaCount: 3, concurrency: 50}}", "150"},
		{"KEDA's max, largest commands pool", `
workers:
  pools:
    - {name: commands, stream: commands, concurrency: 10, autoscaling: {keda: {enabled: true, maxReplicaCount: 7}}}
    - {name: heavy, stream: commands, routed: true, concurrency: 4, replicaCount: 30}
    - {name: warehouse, stream: warehouse, concurrency: 1000, replicaCount: 9}
`, "120"},
		{"the HPA's max", `
workers:
  pools:
    - {name: commands, stream: commands, concurrency: 20, resources: {requests: {cpu: 1}}, autoscaling: {hpa: {enabled: true, maxReplicas: 12}}}
`, "240"},
		{"set by hand", "streams: {commands: {maxAckPending: 4096}}", "4096"},
		{"no commands pool", "workers: {pools: [{name: warehouse, stream: warehouse}]}", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := mustRender(t, values(t, tc.vals))
			cm := get[corev1.ConfigMap](m, fullname+"-config")
			if cm == nil {
				t.Fatalf("no ConfigMap %s-config", fullname)
			}
			got, ok := cm.Data["NOETL_WORKER_NATS_MAX_ACK_PENDING"]
			if got != tc.want || (tc.want == "" && ok) {
				t.Errorf("NOETL_WORKER_NATS_MAX_ACK_PENDING = %q (set %v), want %q", got, ok, tc.want)
			}
			// Every role reads it from the shared ConfigMap, and no role's
			// own map overrides it.
			for _, part := range []string{"server", "worker"} {
				if v, ok := get[corev1.ConfigMap](m, fullname+"-"+part).Data["NOETL_WORKER_NATS_MAX_ACK_PENDING"]; ok {
					t.Errorf("ConfigMap %s-%s sets NOETL_WORKER_NATS_MAX_ACK_PENDING=%s too; the roles would disagree", fullname, part, v)
				}
			}
		})
	}
	// A role's config.* cannot set it either: the server and the workers
	// would reconcile the durables with different caps.
	for _, role := range []string{"shared", "server", "worker", "gateway"} {
		_, err := renderChart(t, values(t, "gateway: {enabled: true}\nconfig: {"+role+": {NOETL_WORKER_NATS_MAX_ACK_PENDING: \"9\"}}"))
		if err == nil || !strings.Contains(err.Error(), "config."+role+".NOETL_WORKER_NATS_MAX_ACK_PENDING") {
			t.Errorf("config.%s.NOETL_WORKER_NATS_MAX_ACK_PENDING: err %v, want a refusal naming it", role, err)
		}
	}
	if _, err := renderChart(t, values(t, "streams: {commands: {maxAckPending: 0}}")); err == nil {
		t.Error("streams.commands.maxAckPending 0 renders; the schema must want at least 1")
	}
}

// KEDA's lag is unprocessed plus ack pending (the running jobs), so a
// replica's share defaults to its concurrency, not to a fixed number that
// scales out for work one replica could hold.
func TestKEDALagThresholdDefaultsToConcurrency(t *testing.T) {
	t.Parallel()
	m := mustRender(t, values(t, `
nats: {networkPolicy: {monitorFrom: [{namespaceSelector: {}}]}}
workers:
  defaults: {autoscaling: {keda: {enabled: true}}}
  pools:
    - {name: commands, stream: commands}
    - {name: heavy, stream: commands, routed: true, concurrency: 4}
    - {name: warehouse, stream: warehouse, concurrency: 16, autoscaling: {keda: {lagThreshold: 5}}}
`))
	want := map[string]string{"commands": "100", "heavy": "4", "warehouse": "5"}
	for pool, w := range want {
		so := get[scaledObject](m, fullname+"-worker-"+pool)
		if so == nil {
			t.Fatalf("pool %s: no ScaledObject", pool)
		}
		for i, tr := range so.Spec.Triggers {
			if got := tr.Metadata["lagThreshold"]; got != w {
				t.Errorf("pool %s trigger %d: lagThreshold %q, want %s", pool, i, got, w)
			}
		}
	}
}
