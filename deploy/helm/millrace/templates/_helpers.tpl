{{/* Names ---------------------------------------------------------------- */}}

{{- define "millrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* fullname: release-chart, or the release alone when it already holds the
chart name. At most 40 characters: object names add up to 23 more
(-nats-headless, -worker-<pool>), and Service names and the StatefulSet's
pod-name label must stay within 63. */}}
{{- define "millrace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "millrace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* labels: call with (dict "ctx" $ "component" "server"). */}}
{{- define "millrace.labels" -}}
helm.sh/chart: {{ include "millrace.chart" .ctx }}
{{ include "millrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* selectorLabels: name, instance, component (and the pool of a worker). */}}
{{- define "millrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "millrace.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .pool }}
millrace.io/pool: {{ . }}
{{- end }}
{{- end }}

{{- define "millrace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "millrace.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "millrace.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where things are ------------------------------------------------------- */}}

{{- define "millrace.secretName" -}}
{{- default (include "millrace.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "millrace.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s-nats:4222" (include "millrace.fullname" .) }}
{{- else }}
{{- required "nats.external.url is required when nats.enabled is false (the URL of your NATS, e.g. nats://nats.nats.svc:4222)" .Values.nats.external.url }}
{{- end }}
{{- end }}

{{/* natsMonitoringEndpoint: host:8222 for KEDA; the headless Service, so that
in a cluster KEDA can reach the node leading the consumer. */}}
{{- define "millrace.natsMonitoringEndpoint" -}}
{{- if .Values.nats.enabled }}
{{- printf "%s-nats-headless.%s.svc.cluster.local:8222" (include "millrace.fullname" .) .Release.Namespace }}
{{- else }}
{{- .Values.nats.external.monitoringEndpoint }}
{{- end }}
{{- end }}

{{- define "millrace.serverUrl" -}}
{{- printf "http://%s-server:%v" (include "millrace.fullname" .) .Values.server.service.port }}
{{- end }}

{{- define "millrace.streamReplicas" -}}
{{- if not (kindIs "invalid" .Values.nats.streamReplicas) }}
{{- .Values.nats.streamReplicas }}
{{- else if and .Values.nats.enabled .Values.nats.cluster.enabled }}
{{- 3 }}
{{- else }}
{{- 1 }}
{{- end }}
{{- end }}

{{/* Pods ------------------------------------------------------------------ */}}

{{/* secretEnv: env entries from the chart's Secret (or existingSecret).
Call with (dict "ctx" $ "keys" (list "DATABASE_URL" ...)); keys not in the
required list are optional: true, so an existingSecret may leave them out. */}}
{{- define "millrace.secretEnv" -}}
{{- $required := list "DATABASE_URL" "MILLRACE_WORKER_TOKEN" }}
{{- range .keys }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "millrace.secretName" $.ctx }}
      key: {{ . }}
      {{- if not (has . $required) }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/* natsSecretEnv: the secret settings every long-running role reads: NATS's
from the Secret and the credentials mount, and the OTLP exporter's headers
(often an API key). */}}
{{- define "millrace.natsSecretEnv" -}}
{{- include "millrace.secretEnv" (dict "ctx" . "keys" (list "NATS_USER" "NATS_PASSWORD" "OTEL_EXPORTER_OTLP_HEADERS")) }}
{{- if .Values.natsCredentials.existingSecret }}
- name: NATS_CREDS
  value: /etc/millrace/nats/{{ .Values.natsCredentials.key }}
{{- end }}
{{- end }}

{{/* envFrom: the shared ConfigMap, then the role's (later wins). */}}
{{- define "millrace.envFrom" -}}
- configMapRef:
    name: {{ include "millrace.fullname" .ctx }}-config
- configMapRef:
    name: {{ include "millrace.fullname" .ctx }}-{{ .role }}
{{- end }}

{{/* checksums: pods roll when the ConfigMaps or the secret values change.
The secret's is taken over the values that make the chart's Secret, not over
the rendered Secret: generated tokens are random at every render without a
cluster and kept by lookup with one, and the checksum must not change with
them (helm template twice, or a GitOps tool rendering at every sync, must
not roll the pods). An existingSecret's data is read with lookup, so an
upgrade after rotating it rolls the pods. */}}
{{- define "millrace.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include "millrace.secretChecksum" . }}
{{- end }}

{{- define "millrace.secretChecksum" -}}
{{- $live := dict }}
{{- if .Values.existingSecret }}
{{- with lookup "v1" "Secret" .Release.Namespace .Values.existingSecret }}
{{- $live = default dict .data }}
{{- end }}
{{- end }}
{{- toJson (dict "existingSecret" .Values.existingSecret "secrets" .Values.secrets "natsCredentials" .Values.natsCredentials "live" $live) | sha256sum }}
{{- end }}

{{/* extraEnv: the verbatim entries of a config.* map for a ConfigMap, one
"KEY: value" line each. A key the chart sets in that ConfigMap itself fails:
it would be a duplicate key, which strict YAML parsers reject and others
resolve silently. (Secret settings are refused by the schema.) Call with (dict "extra" MAP "path" "config.shared"
"managed" (list KEY...)). */}}
{{- define "millrace.extraEnv" -}}
{{- range $k, $v := .extra }}
{{- if has $k $.managed }}
{{- fail (printf "%s.%s: the chart sets %s itself; set the value it is made from instead (values.yaml says which)" $.path $k $k) }}
{{- end }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{- define "millrace.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/millrace
{{- if .Values.natsCredentials.existingSecret }}
- name: nats-creds
  mountPath: /etc/millrace/nats
  readOnly: true
{{- end }}
{{- end }}

{{/* volumes: call with (dict "ctx" $ "dataClaim" "<claim or empty>"). */}}
{{- define "millrace.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  {{- if .dataClaim }}
  persistentVolumeClaim:
    claimName: {{ .dataClaim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if .ctx.Values.natsCredentials.existingSecret }}
- name: nats-creds
  secret:
    secretName: {{ .ctx.Values.natsCredentials.existingSecret }}
    items:
      - key: {{ .ctx.Values.natsCredentials.key }}
        path: {{ .ctx.Values.natsCredentials.key }}
{{- end }}
{{- end }}

{{/* podSpecCommon: service account, pull secrets, security context. */}}
{{- define "millrace.podSpecCommon" -}}
serviceAccountName: {{ include "millrace.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* scheduling: call with the role's values (nodeSelector, tolerations, affinity). */}}
{{- define "millrace.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Worker pools -------------------------------------------------------- */}}

{{/* withDefaults: .values over .defaults, maps merged key by key (false and 0
in .values win, unlike sprig's merge). Returns JSON. */}}
{{- define "millrace.withDefaults" -}}
{{- $out := dict }}
{{- range $k, $v := .defaults }}
{{- if hasKey $.values $k }}
{{- $pv := get $.values $k }}
{{- if and (kindIs "map" $v) (kindIs "map" $pv) }}
{{- $_ := set $out $k (include "millrace.withDefaults" (dict "defaults" $v "values" $pv) | fromJson) }}
{{- else }}
{{- $_ := set $out $k $pv }}
{{- end }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .values }}
{{- if not (hasKey $out $k) }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* pools: every pool with its defaults applied and checked, as JSON
{"pools": [...]}. The checks the schema cannot express fail here. */}}
{{- define "millrace.pools" -}}
{{- $pools := list }}
{{- $seen := dict }}
{{- range .Values.workers.pools }}
{{- $p := include "millrace.withDefaults" (dict "defaults" $.Values.workers.defaults "values" .) | fromJson }}
{{- if hasKey $seen $p.name }}
{{- fail (printf "workers.pools: pool name %q appears twice; pool names must be unique" $p.name) }}
{{- end }}
{{- $_ := set $seen $p.name true }}
{{- if le (int $p.terminationGracePeriodSeconds) (int $p.shutdownGraceSeconds) }}
{{- fail (printf "workers.pools[%s]: terminationGracePeriodSeconds (%v) must be greater than shutdownGraceSeconds (%v), or Kubernetes kills the worker before it releases its in-flight work" $p.name $p.terminationGracePeriodSeconds $p.shutdownGraceSeconds) }}
{{- end }}
{{- if and $p.autoscaling.keda.enabled $p.autoscaling.hpa.enabled }}
{{- fail (printf "workers.pools[%s]: autoscaling.keda.enabled and autoscaling.hpa.enabled are both true; pick one" $p.name) }}
{{- end }}
{{- if and $p.autoscaling.hpa.enabled (not (dig "requests" "cpu" "" (default dict $p.resources))) }}
{{- fail (printf "workers.pools[%s]: autoscaling.hpa scales on CPU utilization, a percentage of the pods' CPU request; set resources.requests.cpu" $p.name) }}
{{- end }}
{{- $routed := and (hasKey $p "routed") $p.routed }}
{{- if and $routed (ne $p.stream "commands") }}
{{- fail (printf "workers.pools[%s]: routed is only for stream commands (got stream %s)" $p.name $p.stream) }}
{{- end }}
{{- /* KEDA's lag counts running jobs: a replica should carry about its concurrency. */}}
{{- if kindIs "invalid" $p.autoscaling.keda.lagThreshold }}
{{- $_ := set $p.autoscaling.keda "lagThreshold" $p.concurrency }}
{{- end }}
{{- $_ := set $p "routingName" "" }}
{{- if $routed }}
{{- $_ := set $p "routingName" (default $p.name $p.routing) }}
{{- end }}
{{- /* With server.natsEnabled=false the servers run queries and
pre-aggregates themselves and publish no jobs: such pools are left out. */}}
{{- if or $.Values.server.natsEnabled (eq $p.stream "commands") }}
{{- $pools = append $pools $p }}
{{- end }}
{{- end }}
{{- toJson (dict "pools" $pools) }}
{{- end }}

{{/* maxAckPending: NOETL_WORKER_NATS_MAX_ACK_PENDING, one max_ack_pending
for every commands durable, which caps the jobs a pool runs at once:
streams.commands.maxAckPending, else the largest commands pool's most
replicas (autoscaling's max, or replicaCount) x concurrency; empty without
commands pools (the roles' default then). */}}
{{- define "millrace.maxAckPending" -}}
{{- if not (kindIs "invalid" .Values.streams.commands.maxAckPending) }}
{{- int .Values.streams.commands.maxAckPending }}
{{- else }}
{{- $max := 0 }}
{{- range (include "millrace.pools" . | fromJson).pools }}
{{- if eq .stream "commands" }}
{{- $r := int .replicaCount }}
{{- if .autoscaling.keda.enabled }}
{{- $r = int .autoscaling.keda.maxReplicaCount }}
{{- else if .autoscaling.hpa.enabled }}
{{- $r = int .autoscaling.hpa.maxReplicas }}
{{- end }}
{{- $n := mul $r (int .concurrency) }}
{{- if gt (int $n) $max }}
{{- $max = int $n }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt $max 0 }}
{{- $max }}
{{- end }}
{{- end }}
{{- end }}

{{/* poolConsumers: the durables a pool reads, its main one first. Call with
(dict "ctx" $ "pool" $p); returns JSON {"stream": S, "consumers": [...]}. */}}
{{- define "millrace.poolConsumers" -}}
{{- $s := .ctx.Values.streams }}
{{- if eq .pool.stream "commands" }}
{{- $c := $s.commands.consumer }}
{{- if .pool.routingName }}
{{- $c = printf "%s_%s" $s.commands.consumer .pool.routingName }}
{{- end }}
{{- toJson (dict "stream" $s.commands.stream "consumers" (list $c)) }}
{{- else if eq .pool.stream "warehouse" }}
{{- toJson (dict "stream" $s.warehouse.stream "consumers" (list $s.warehouse.consumer (printf "%s-interactive" $s.warehouse.consumer))) }}
{{- else }}
{{- toJson (dict "stream" $s.preAggregate.stream "consumers" (list $s.preAggregate.consumer (printf "%s-materialization" $s.preAggregate.consumer))) }}
{{- end }}
{{- end }}

{{/* quantityBytes: a Kubernetes quantity as the schema allows it
(N[.F][Ki|Mi|Gi|Ti|Pi|K|M|G|T|P]) in bytes, for nats.conf limits derived
from a volume's size. */}}
{{- define "millrace.quantityBytes" -}}
{{- $q := toString . }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $unit := trimPrefix $num $q }}
{{- $mult := get (dict "" 1 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624) $unit }}
{{- if or (not $num) (kindIs "invalid" $mult) }}
{{- fail (printf "%q is not a size the chart understands (e.g. 10Gi)" $q) }}
{{- end }}
{{- $parts := splitList "." $num }}
{{- $bytes := mul (int64 (first $parts)) $mult }}
{{- if gt (len $parts) 1 }}
{{- $frac := index $parts 1 }}
{{- $bytes = add $bytes (div (mul (int64 $frac) $mult) (int64 (printf "1%s" (repeat (len $frac) "0")))) }}
{{- end }}
{{- $bytes }}
{{- end }}
