package helm_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"

	"github.com/millrace/millrace/internal/bus"
)

// poolValues is a worker pool as the chart sees it after workers.defaults.
type poolValues struct {
	name, stream, routing    string
	routed                   bool
	replicas, concurrency    int
	grace, termGrace         int
	keda, hpa, pdb           bool
	lag, activationLag       int
	minReplicas, maxReplicas int
	account                  string
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
			// lagThreshold null (the default) is the pool's concurrency:
			// KEDA's lag counts the running jobs too.
			pv.lag, pv.activationLag = pv.concurrency, num("autoscaling.keda.activationLagThreshold")
			if lookupValue(p, "autoscaling.keda.lagThreshold") != nil {
				pv.lag = num("autoscaling.keda.lagThreshold")
			}
			pv.minReplicas, pv.maxReplicas = num("autoscaling.keda.minReplicaCount"), num("autoscaling.keda.maxReplicaCount")
			pv.account = s("autoscaling.keda.account")
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
				// KEDA reads lag as pending + ack-pending, so a commands
				// pool it scales acks on completion; others on claim.
				wantAck := ""
				if p.stream == "commands" {
					wantAck = "claim"
					if p.keda {
						wantAck = "completion"
					}
				}
				if got := env["MILLRACE_WORKER_ACK"].value; got != wantAck {
					t.Errorf("%s: MILLRACE_WORKER_ACK = %q, want %q (keda %v)", d.Name, got, wantAck, p.keda)
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
	for _, set := range []string{"keda", "external-nats+keda", "keda+account"} {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			vals := setValues(t, "keda")
			wantEndpoint := fmt.Sprintf("%s-nats-headless.%s.svc.cluster.local:8222", fullname, namespace)
			wantAccount := "$G"
			if set == "keda+account" {
				// NATS with accounts or JWT: the monitor endpoint lists the
				// consumers under the account's public key.
				wantAccount = "AACCOUNTPUBLICKEY"
				vals = merge(vals, values(t, "workers: {defaults: {autoscaling: {keda: {account: "+wantAccount+"}}}}"))
			}
			if set == "external-nats+keda" {
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
					if tr.Type != "nats-jetstream" || md["natsServerMonitoringEndpoint"] != wantEndpoint || md["account"] != wantAccount || md["account"] != p.account || md["stream"] != stream {
						t.Errorf("pool %s trigger %d: %s %v; want nats-jetstream, endpoint %s, account %s, stream %s", p.name, i, tr.Type, md, wantEndpoint, wantAccount, stream)
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
				if set != "external-nats+keda" {
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
