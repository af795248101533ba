{{/*
The chart name, or nameOverride.
*/}}
{{- define "projectionist.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name when
it already contains the chart name, else <release>-<chart>. Kept within 63
characters (the DNS label limit) with room for the longest suffix used
("-leader-election").
*/}}
{{- define "projectionist.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
chart label value: <name>-<version>.
*/}}
{{- define "projectionist.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "projectionist.labels" -}}
helm.sh/chart: {{ include "projectionist.chart" . }}
{{ include "projectionist.selectorLabels" . }}
app.kubernetes.io/version: {{ include "projectionist.tag" . | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: projectionist
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the operator's pods; immutable once installed.
*/}}
{{- define "projectionist.selectorLabels" -}}
app.kubernetes.io/name: {{ include "projectionist.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "projectionist.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "projectionist.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "projectionist.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The operator's image.
*/}}
{{- define "projectionist.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "projectionist.tag" .) }}
{{- end }}

{{/*
The default worker image: workerImage.repository:workerImage.tag, each
defaulting to the operator's.
*/}}
{{- define "projectionist.workerImage" -}}
{{- $repo := default .Values.image.repository .Values.workerImage.repository }}
{{- $tag := default (include "projectionist.tag" .) .Values.workerImage.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/*
Fails, naming the value, unless the cluster serves the Prometheus operator's
API (monitoring.coreos.com/v1). Called with (list $ "monitoring.podMonitor.enabled").
*/}}
{{- define "projectionist.requirePrometheusOperator" -}}
{{- $root := index . 0 }}
{{- if not ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- fail (printf "%s is true, but the cluster does not serve monitoring.coreos.com/v1: install the Prometheus operator's CRDs first (with helm template, pass --api-versions monitoring.coreos.com/v1), or set it to false" (index . 1)) }}
{{- end }}
{{- end }}
