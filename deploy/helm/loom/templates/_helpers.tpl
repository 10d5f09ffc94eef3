{{/* Loom's image reference. */}}
{{- define "loom.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The image for workloads that name none. */}}
{{- define "loom.workloadImage" -}}
{{ .Values.image.workload | default (printf "loom-python:%s" .Chart.AppVersion) }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "loom.labels" -}}
app.kubernetes.io/part-of: loom
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The claim holding the API's data. */}}
{{- define "loom.dataClaim" -}}
{{ .Values.persistence.existingClaim | default "loom-data" }}
{{- end }}

{{/* Loom's per-model NetworkPolicies admit the gateway from loom-system only. */}}
{{- define "loom.checkNamespace" -}}
{{- if ne .Release.Namespace "loom-system" -}}
{{- fail (printf "install Loom into the namespace loom-system, not %q: the NetworkPolicies Loom makes for each model admit its gateway from loom-system only (helm install loom deploy/helm/loom -n loom-system --create-namespace)" .Release.Namespace) -}}
{{- end -}}
{{- end }}
