{{/* The objects' name: the release's, unless it already says streamwatch. */}}
{{- define "streamwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "streamwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamwatch.labels" -}}
{{ include "streamwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Where the TLS Secret is mounted; kafka.ssl_*file point into it. */}}
{{- define "streamwatch.tlsDir" -}}/etc/streamwatch/tls{{- end -}}

{{/*
The checkpoint volume's size: persistence.size, or bytesPerStream x maxStreams x 3 (a
partition keeps at most its newest full segment, the one before and their deltas) x 1.5
(chains of partitions that moved away), rounded up to whole Gi.
*/}}
{{- define "streamwatch.stateSize" -}}
{{- if .Values.persistence.size -}}
{{- .Values.persistence.size -}}
{{- else -}}
{{- $bytes := mul (int64 .Values.state.bytesPerStream) (int64 .Values.state.maxStreams) 9 -}}
{{- $gi := 1073741824 -}}
{{- printf "%dGi" (div (add (div $bytes 2) (sub $gi 1)) $gi) -}}
{{- end -}}
{{- end -}}

{{/*
The daemon's config (docs/configuration.md): .Values.config, under the keys the chart sets
from the other values. Keys that tie the config to the pod (the group instance id variable,
the checkpoint directory, the metrics address, the Secrets' variable and paths) are always
the chart's.
*/}}
{{- define "streamwatch.config" -}}
{{- $v := .Values -}}
{{- $kafka := dict
  "bootstrap_servers" $v.kafka.bootstrapServers
  "input_topics" $v.kafka.inputTopics
  "group_id" $v.kafka.groupId
  "client_id" $v.kafka.clientId
  "auto_offset_reset" $v.kafka.autoOffsetReset
  "group_instance_id_env" "POD_NAME"
  "partition_assignment" "cooperative-sticky"
  "consumer" $v.kafka.consumer
  "producer" $v.kafka.producer
-}}
{{- $protocol := "PLAINTEXT" -}}
{{- if and $v.kafka.sasl.enabled $v.kafka.tls.enabled -}}
{{- $protocol = "SASL_SSL" -}}
{{- else if $v.kafka.sasl.enabled -}}
{{- $protocol = "SASL_PLAINTEXT" -}}
{{- else if $v.kafka.tls.enabled -}}
{{- $protocol = "SSL" -}}
{{- end -}}
{{- $_ := set $kafka "security_protocol" $protocol -}}
{{- if $v.kafka.sasl.enabled -}}
{{- $_ := set $kafka "sasl_mechanism" $v.kafka.sasl.mechanism -}}
{{- $_ := set $kafka "sasl_username" $v.kafka.sasl.username -}}
{{- $_ := set $kafka "sasl_password_env" "KAFKA_SASL_PASSWORD" -}}
{{- end -}}
{{- if $v.kafka.tls.enabled -}}
{{- $dir := include "streamwatch.tlsDir" . -}}
{{- $_ := set $kafka "ssl_cafile" (printf "%s/%s" $dir $v.kafka.tls.caKey) -}}
{{- $_ := set $kafka "ssl_check_hostname" $v.kafka.tls.checkHostname -}}
{{- if $v.kafka.tls.certKey -}}
{{- $_ := set $kafka "ssl_certfile" (printf "%s/%s" $dir $v.kafka.tls.certKey) -}}
{{- end -}}
{{- if $v.kafka.tls.keyKey -}}
{{- $_ := set $kafka "ssl_keyfile" (printf "%s/%s" $dir $v.kafka.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- $chart := dict
  "kafka" $kafka
  "model" (dict "path" $v.model.path "threads" $v.model.threads "max_rows" $v.model.maxRows)
  "outputs" (dict "anomalies_topic" $v.outputs.anomaliesTopic "dead_letter_topic" $v.outputs.deadLetterTopic)
  "state" (dict
    "max_streams" $v.state.maxStreams
    "idle_ttl_seconds" $v.state.idleTtlSeconds
    "checkpoint_interval_seconds" $v.state.checkpointIntervalSeconds
    "checkpoint_dir" "/var/lib/streamwatch/state"
    "changelog_topic" $v.state.changelogTopic)
  "metrics" (dict "host" "0.0.0.0" "port" $v.metrics.port "liveness_seconds" $v.metrics.livenessSeconds)
  "logging" (dict "level" $v.logging.level "format" $v.logging.format)
-}}
{{- toYaml (mustMergeOverwrite (deepCopy (default (dict) $v.config)) $chart) -}}
{{- end -}}
