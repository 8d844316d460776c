package helm_test

import (
	"fmt"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

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
			"databaseUrl":             "postgres://millrace:pw-Db-7f3a9c@db:5432/millrace",
			"secretKey":               "7f3a9c0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
			"workerToken":             "mrt_" + strings.Repeat("Worker", 8)[:43],
			"gatewayToken":            "mrt_" + strings.Repeat("Gateway", 7)[:43],
			"adminToken":              "mrt_" + strings.Repeat("Admin", 9)[:43],
			"natsUser":                "nats-user-7f3a9c",
			"natsPassword":            "nats-pw-7f3a9c",
			"oidcClientId":            "oidc-client-7f3a9c",
			"otelExporterOtlpHeaders": "x-api-key=otel-key-7f3a9c",
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

// Each role reads its secret settings from the Secret (the chart's or
// existingSecret), under the key named like the variable.
func TestSecretKeysPerRole(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"server":          {"DATABASE_URL", "MILLRACE_SECRET_KEY", "OIDC_CLIENT_ID", "NATS_USER", "NATS_PASSWORD", "OTEL_EXPORTER_OTLP_HEADERS"},
		"gateway":         {"MILLRACE_GATEWAY_TOKEN", "NATS_USER", "NATS_PASSWORD", "OTEL_EXPORTER_OTLP_HEADERS"},
		"worker-commands": {"MILLRACE_WORKER_TOKEN", "NATS_USER", "NATS_PASSWORD", "OTEL_EXPORTER_OTLP_HEADERS"},
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

// A secret setting in config.* would land in a ConfigMap: the schema
// refuses it, naming it.
func TestSecretSettingsAreRefusedInConfig(t *testing.T) {
	t.Parallel()
	for _, role := range []string{"shared", "server", "worker", "gateway"} {
		for _, key := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "NATS_PASSWORD", "DATABASE_URL"} {
			_, err := renderChart(t, values(t, "gateway: {enabled: true}\nconfig: {"+role+": {"+key+": x-api-key=k}}"))
			path := "config." + role + "." + key
			if err == nil || !strings.Contains(err.Error(), "/config/"+role+"/"+key) {
				t.Errorf("%s: err %v, want a refusal naming it", path, err)
			}
		}
	}
	// The headers are optional: an existingSecret may leave the key out.
	m := mustRender(t, values(t, "secrets: {otelExporterOtlpHeaders: x-api-key=k}"))
	env, err := m.env(deployment(t, m, "worker-commands").Spec.Template.Spec.Containers[0])
	if err != nil {
		t.Fatal(err)
	}
	if ref := env["OTEL_EXPORTER_OTLP_HEADERS"].secret; ref == nil || ref.Optional == nil || !*ref.Optional {
		t.Errorf("worker OTEL_EXPORTER_OTLP_HEADERS: %+v, want an optional secretKeyRef", ref)
	}
}
