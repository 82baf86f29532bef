{{/* Names, labels and the small pieces the templates share. */}}

{{- define "diptych.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; Services and the StatefulSet add suffixes of at most 9 characters. */}}
{{- define "diptych.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "diptych.selectorLabels" -}}
app.kubernetes.io/name: {{ include "diptych.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "diptych.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "diptych.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "diptych.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "diptych.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The CPU image, or the CUDA image with gpu.enabled. */}}
{{- define "diptych.image" -}}
{{- include "diptych.imageFor" (dict "root" . "gpu" .Values.gpu.enabled) }}
{{- end }}

{{/* The CPU image, or the CUDA image when .gpu (the encoder role's own gpu.enabled). */}}
{{- define "diptych.imageFor" -}}
{{- $v := .root.Values }}
{{- $tag := default .root.Chart.AppVersion $v.image.tag }}
{{- if .gpu }}
{{- $tag = default (printf "%s-cuda" $tag) $v.image.cudaTag }}
{{- end }}
{{- printf "%s:%s" $v.image.repository $tag }}
{{- end }}

{{/* The prometheus-adapter rule (its configuration file's `rules:`) that serves the encoder
autoscaler's metric: per pod, rate(sum) / rate(count) of the encoder graph's queue-wait
histogram, 0 while no slice arrives. */}}
{{- define "diptych.encoderAdapterRule" -}}
{{- $a := .Values.cluster.encoder.autoscaling -}}
{{- $series := "diptych_encoder_queue_duration_seconds" -}}
rules:
  - seriesQuery: '{{ $series }}_count{namespace!="",pod!="",graph="encoder"}'
    resources:
      overrides:
        namespace:
          resource: namespace
        pod:
          resource: pod
    name:
      matches: ^{{ $series }}_count$
      as: {{ $a.metricName }}
    metricsQuery: >-
      sum by (<<.GroupBy>>) (rate({{ $series }}_sum{<<.LabelMatchers>>,graph="encoder"}[{{ $a.rateWindow }}]))
      / clamp_min(sum by (<<.GroupBy>>) (rate({{ $series }}_count{<<.LabelMatchers>>,graph="encoder"}[{{ $a.rateWindow }}])), 1e-9)
{{- end }}

{{/* The DICOM ports the server listens on, as "NAME PORT" lines: the plain port (`dicom`)
unless dicom.plain is false, and the DICOM-TLS port (`dicom-tls`) while dicom.tls.enabled. */}}
{{- define "diptych.dicomPorts" -}}
{{- if .Values.dicom.plain }}
dicom {{ int .Values.dicom.port }}
{{- end }}
{{- if .Values.dicom.tls.enabled }}
dicom-tls {{ int .Values.dicom.tls.port }}
{{- end }}
{{- end }}

{{/* A TOML float: f64 keys of the server's configuration take no bare integer. */}}
{{- define "diptych.tomlFloat" -}}
{{- $s := toString (float64 .) }}
{{- if or (contains "." $s) (contains "e" $s) }}{{ $s }}{{ else }}{{ $s }}.0{{ end }}
{{- end }}

{{/* Where Secrets are mounted; the ConfigMap names the files under these. */}}
{{- define "diptych.paths" -}}
config: /etc/diptych/diptych.toml
grpcTls: /etc/diptych/tls/grpc
grpcClientCa: /etc/diptych/tls/grpc-client-ca
dicomTls: /etc/diptych/tls/dicom
dicomClientCa: /etc/diptych/tls/dicom-client-ca
auth: /etc/diptych/auth
{{- end }}

{{/* Values that the schema cannot relate to one another: refused here with their names. */}}
{{- define "diptych.validate" -}}
{{- if ge (float64 .Values.shutdownDeadlineSeconds) (float64 .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "shutdownDeadlineSeconds (%v) must be shorter than terminationGracePeriodSeconds (%v): Kubernetes would kill the server before its final checkpoint" .Values.shutdownDeadlineSeconds .Values.terminationGracePeriodSeconds) }}
{{- end }}
{{- if and .Values.grpc.tls.enabled (not .Values.grpc.tls.secretName) }}
{{- fail "grpc.tls.enabled needs grpc.tls.secretName: a Secret of type kubernetes.io/tls that you created" }}
{{- end }}
{{- if and .Values.dicom.tls.enabled (not .Values.dicom.tls.secretName) }}
{{- fail "dicom.tls.enabled needs dicom.tls.secretName: a Secret of type kubernetes.io/tls that you created" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- fail "auth.enabled needs auth.existingSecret: the Secret holding the token file" }}
{{- end }}
{{- if and .Values.auth.enabled .Values.auth.allowUnauthenticated }}
{{- fail "auth.enabled (a tokens file) and auth.allowUnauthenticated exclude each other: remove one" }}
{{- end }}
{{- if and .Values.dicom.kos.enabled (not (has .Values.dicom.kos.archive (list "de-identified" "teaching"))) }}
{{- fail "dicom.kos.archive must be \"de-identified\" or \"teaching\": KOS documents reference other patients' images" }}
{{- end }}
{{- if lt (int .Values.encoder.queueCapacity) (int .Values.encoder.maxBatch) }}
{{- fail (printf "encoder.queueCapacity (%v) must be at least encoder.maxBatch (%v)" .Values.encoder.queueCapacity .Values.encoder.maxBatch) }}
{{- end }}
{{- if and (not .Values.dicom.plain) (not .Values.dicom.tls.enabled) }}
{{- fail "dicom.plain = false (TLS only) needs dicom.tls.enabled and dicom.tls.secretName; or set dicom.enabled = false for no DICOM" }}
{{- end }}
{{- with .Values.cluster }}
{{- if .enabled }}
{{- if $.Values.grpc.tls.enabled }}
{{- fail "cluster.enabled with grpc.tls.enabled: the kubelet's gRPC probes speak plaintext and routers serve no HTTP port yet, and routers call shards in plaintext; terminate TLS in front of the routers' gRPC Service" }}
{{- end }}
{{- if $.Values.dicom.kos.enabled }}
{{- fail "cluster.enabled with dicom.kos.enabled: a cluster does not send KOS documents yet; use a single node for KOS" }}
{{- end }}
{{- if and .encoder.enabled .encoder.autoscaling.enabled (gt (int .encoder.autoscaling.minReplicas) (int .encoder.autoscaling.maxReplicas)) }}
{{- fail (printf "cluster.encoder.autoscaling.minReplicas (%v) must not be above maxReplicas (%v)" .encoder.autoscaling.minReplicas .encoder.autoscaling.maxReplicas) }}
{{- end }}
{{- if and (not .nats.url) (gt (int .nats.streamReplicas) 3) }}
{{- fail (printf "cluster.nats.streamReplicas (%v) is more than the three NATS servers this chart deploys" .nats.streamReplicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- $ports := list (int .Values.grpc.port) (int .Values.http.port) (int .Values.dicom.port) }}
{{- if .Values.dicom.tls.enabled }}{{ $ports = append $ports (int .Values.dicom.tls.port) }}{{ end }}
{{- if ne (len (uniq $ports)) (len $ports) }}
{{- fail (printf "grpc.port, http.port, dicom.port and dicom.tls.port must differ (%v)" $ports) }}
{{- end }}
{{- end }}

{{/* The NATS servers' client URLs: cluster.nats.url, or the three nodes of this release. */}}
{{- define "diptych.natsUrl" -}}
{{- if .Values.cluster.nats.url }}
{{- .Values.cluster.nats.url }}
{{- else }}
{{- $fullname := include "diptych.fullname" . }}
{{- $urls := list }}
{{- range $i := until 3 }}
{{- $urls = append $urls (printf "nats://%s-nats-%d.%s-nats-headless.%s.svc:4222" $fullname $i $fullname $.Release.Namespace) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}

{{/* The pod and container security contexts of every pod of the cluster mode. */}}
{{- define "diptych.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.runAsUser }}
runAsGroup: {{ int .Values.runAsGroup }}
fsGroup: {{ int .Values.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "diptych.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The labels selecting one component's pods in the cluster mode. */}}
{{- define "diptych.componentSelector" -}}
{{ include "diptych.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
