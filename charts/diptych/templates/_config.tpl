{{/* The server's configuration file (TOML) from the values in `.Values`; the cluster's
ConfigMaps render it with role-specific values and add their [cluster] section. */}}
{{- define "diptych.serverToml" -}}
{{- $paths := include "diptych.paths" . | fromYaml }}
{{- $v := .Values -}}
# The configuration of `diptych serve`, rendered by the Helm chart {{ .Chart.Name }}-{{ .Chart.Version }}.
# Every key is documented in service/src/config.rs. Not here: the execution provider
# (DIPTYCH_EXECUTION_PROVIDER in the pod, cuda with gpu.enabled).
data_dir = "/data"
model = {{ $v.modelPath | toJson }}
shutdown_deadline_s = {{ include "diptych.tomlFloat" $v.shutdownDeadlineSeconds }}
{{- with $v.viewerUrlTemplate }}
viewer_url_template = {{ . | toJson }}
{{- end }}

[grpc]
addr = "0.0.0.0:{{ int $v.grpc.port }}"
max_message_bytes = {{ int64 $v.grpc.maxMessageBytes }}
{{- if $v.grpc.tls.enabled }}
tls_cert = "{{ $paths.grpcTls }}/tls.crt"
tls_key = "{{ $paths.grpcTls }}/tls.key"
{{- if $v.grpc.tls.clientCASecretName }}
tls_client_ca = "{{ $paths.grpcClientCa }}/ca.crt"
{{- end }}
{{- end }}
{{- if or $v.auth.enabled $v.auth.allowUnauthenticated }}

[auth]
{{- if $v.auth.enabled }}
tokens_file = "{{ $paths.auth }}/{{ $v.auth.secretKey }}"
{{- else }}
allow_unauthenticated = true
{{- end }}
{{- end }}

[http]
addr = "0.0.0.0:{{ int $v.http.port }}"

[log]
format = {{ $v.logFormat | toJson }}

[encoder]
sessions = {{ int $v.encoder.sessions }}
intra_threads = {{ int $v.encoder.intraThreads }}
intra_op_spinning = {{ $v.encoder.intraOpSpinning }}
max_batch = {{ int $v.encoder.maxBatch }}
max_queue_delay_ms = {{ int $v.encoder.maxQueueDelayMs }}
queue_capacity = {{ int $v.encoder.queueCapacity }}
{{- with $v.encoder.remoteUrl }}
remote_url = {{ . | toJson }}
{{- end }}

[index]
max_backlog_frames = {{ int64 $v.index.maxBacklogFrames }}
min_free_bytes = {{ int64 $v.index.minFreeBytes }}

[images]
max_pixels = {{ int64 $v.images.maxPixels }}
max_inflated_bytes = {{ int64 $v.images.maxInflatedBytes }}

[dicom]
enabled = {{ $v.dicom.enabled }}
addr = "0.0.0.0:{{ int $v.dicom.port }}"
plain = {{ $v.dicom.plain }}
tls_addr = "0.0.0.0:{{ int $v.dicom.tls.port }}"
ae_title = {{ $v.dicom.aeTitle | toJson }}
max_associations = {{ int $v.dicom.maxAssociations }}
max_pdu_length = {{ int64 $v.dicom.maxPduLength }}
read_timeout_s = {{ int $v.dicom.readTimeoutSeconds }}
idle_timeout_s = {{ int $v.dicom.idleTimeoutSeconds }}
allowed_callers = {{ $v.dicom.allowedCallers | toJson }}
study_quiet_period_s = {{ include "diptych.tomlFloat" $v.dicom.studyQuietPeriodSeconds }}
{{- if $v.dicom.tls.enabled }}
tls_cert = "{{ $paths.dicomTls }}/tls.crt"
tls_key = "{{ $paths.dicomTls }}/tls.key"
{{- if $v.dicom.tls.clientCASecretName }}
tls_client_ca = "{{ $paths.dicomClientCa }}/ca.crt"
{{- end }}
{{- end }}
{{- if $v.dicom.kos.enabled }}

[dicom.kos]
destination = {{ $v.dicom.kos.destination | toJson }}
archive = {{ $v.dicom.kos.archive | toJson }}
top_k = {{ int $v.dicom.kos.topK }}
{{- end }}
{{- end }}
