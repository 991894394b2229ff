{{/* The chart name, or nameOverride. */}}
{{- define "sockscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The object names: fullnameOverride, else the release name when it contains the chart name
(release "sockscope" -> "sockscope"), else "<release>-<name>".
*/}}
{{- define "sockscope.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "sockscope.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The labels selecting the agents (immutable on an installed DaemonSet). */}}
{{- define "sockscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sockscope.name" . }}
{{- if .Values.helmLabels }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end }}

{{/* Every object's labels. */}}
{{- define "sockscope.labels" -}}
{{ include "sockscope.selectorLabels" . }}
{{- if .Values.helmLabels }}
app.kubernetes.io/version: {{ include "sockscope.tag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sockscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sockscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sockscope.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* repository:tag, or repository@digest. */}}
{{- define "sockscope.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "sockscope.tag" .) }}
{{- end }}
{{- end }}

{{/* The Secret with the web config: the existing one, or the one the chart creates. */}}
{{- define "sockscope.webConfigSecret" -}}
{{- .Values.webConfig.existingSecret | default (printf "%s-web-config" (include "sockscope.fullname" .)) }}
{{- end }}

{{/* "true" when the pod gets the init container that installs the seccomp profile. */}}
{{- define "sockscope.installSeccomp" -}}
{{- if and (eq .Values.seccompProfile.type "Localhost") .Values.seccompProfile.install }}true{{ end }}
{{- end }}

{{/* "true" when the endpoint is served over TLS. */}}
{{- define "sockscope.https" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.tls }}true{{ end }}
{{- end }}

{{/*
Settings that cannot be expressed in values.schema.json, refused with a message naming them
(the template functions run at install, lint and render alike).
*/}}
{{- define "sockscope.checks" -}}
{{- $web := .Values.webConfig }}
{{- if $web.enabled }}
{{- if and $web.existingSecret $web.content }}
{{- fail "webConfig: set existingSecret or content, not both" }}
{{- end }}
{{- if not (or $web.existingSecret $web.content) }}
{{- fail "webConfig.enabled needs webConfig.existingSecret or webConfig.content" }}
{{- end }}
{{- if and $web.content (ne (hasKey $web.content "tls_server_config") $web.tls) }}
{{- fail "webConfig.tls must say whether webConfig.content has tls_server_config" }}
{{- end }}
{{- end }}
{{- $tls := .Values.otlp.tls }}
{{- if $tls.existingSecret }}
{{- if not (hasPrefix "https://" .Values.otlp.endpoint) }}
{{- fail "otlp.tls needs an https:// otlp.endpoint (the agent refuses certificates for http://)" }}
{{- end }}
{{- if ne (empty $tls.clientCertificate) (empty $tls.clientKey) }}
{{- fail "otlp.tls: set clientCertificate and clientKey together (mTLS), or neither" }}
{{- end }}
{{- end }}
{{- if and (ne (empty .Values.otlp.headersSecret.name) (empty .Values.otlp.headersSecret.key)) }}
{{- fail "otlp.headersSecret: set name and key together" }}
{{- end }}
{{- if and (eq .Values.seccompProfile.type "Localhost") (not .Values.seccompProfile.localhostProfile) }}
{{- fail "seccompProfile.type Localhost needs seccompProfile.localhostProfile" }}
{{- end }}
{{- end }}

{{/* OTEL_EXPORTER_OTLP_HEADERS from a map: name=value pairs, "%" and "," percent-encoded. */}}
{{- define "sockscope.headers" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k (toString $v | replace "%" "%25" | replace "," "%2C")) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
