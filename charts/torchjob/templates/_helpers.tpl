{{/*
Name helpers. Object names add at most "-operator-metrics" (17 characters) to the full name, so the
full name is cut to 63 - 17 = 46 characters to keep every name a valid DNS label.
*/}}
{{- define "torchjob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 46 | trimSuffix "-" }}
{{- end }}

{{- define "torchjob.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "torchjob.operatorName" -}}
{{- printf "%s-operator" (include "torchjob.fullname" .) }}
{{- end }}

{{- define "torchjob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart creates. */}}
{{- define "torchjob.labels" -}}
helm.sh/chart: {{ include "torchjob.chart" . }}
app.kubernetes.io/name: {{ include "torchjob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: torchjob
{{- end }}

{{/* Selector labels of the operator pods; never change them (Deployment selectors are immutable). */}}
{{- define "torchjob.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "torchjob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "torchjob.operator.labels" -}}
{{ include "torchjob.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "torchjob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "torchjob.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "torchjob.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Namespaces the PodMonitor looks in: its own list, else the watched ones, else all. */}}
{{- define "torchjob.podMonitor.namespaces" -}}
{{- if .Values.podMonitor.namespaces }}
{{- toJson .Values.podMonitor.namespaces }}
{{- else }}
{{- toJson .Values.watchNamespaces }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express (relations between keys). Each message names the key to change.
*/}}
{{- define "torchjob.validateValues" -}}
{{- $messages := list }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- $messages = append $messages (printf "replicaCount: %d replicas without peering would all reconcile the same jobs; set peering.enabled=true or replicaCount=1" (int .Values.replicaCount)) }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- $messages = append $messages (printf "health.port: %d is also metrics.port; give the health endpoint its own port" (int .Values.health.port)) }}
{{- end }}
{{- range .Values.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" . "" }}
{{- if has $flag (list "--namespace" "-n" "--all-namespaces" "-A" "--peering" "--standalone" "--metrics-port" "--health-port" "--liveness") }}
{{- $messages = append $messages (printf "extraArgs: %q is set by the chart; use watchNamespaces, peering.*, metrics.port or health.port instead" .) }}
{{- end }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- $messages = append $messages "serviceMonitor.enabled: the ServiceMonitor selects the metrics Service; set metrics.service.enabled=true" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.serviceMonitor.enabled) }}
{{- $messages = append $messages "prometheusRule.enabled: the operator alerts read what the chart's ServiceMonitor scrapes (job <release>-torchjob-operator-metrics); set serviceMonitor.enabled=true" }}
{{- end }}
{{- if and .Values.kueue.localQueues (not .Values.watchNamespaces) }}
{{- $messages = append $messages "kueue.localQueues: a LocalQueue is created in each of watchNamespaces; set watchNamespaces, or create the LocalQueues yourself" }}
{{- end }}
{{- if $messages }}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail }}
{{- end }}
{{- end }}
