{{/* Names: <release>-prodclass (or the release name when it already says prodclass). */}}
{{- define "prodclass.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "prodclass.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "prodclass.selector" (list . "api") */}}
{{- define "prodclass.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "prodclass.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* The Secret the pods read: yours, or the one this chart creates. */}}
{{- define "prodclass.secretName" -}}
{{- default (printf "%s-secrets" (include "prodclass.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "prodclass.mlflowUrl" -}}
{{- printf "http://%s-mlflow:%v" (include "prodclass.fullname" .) .Values.mlflow.port -}}
{{- end -}}

{{/* Where the API and jobs find MLflow: the chart's own server, or the setting. */}}
{{- define "prodclass.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{- include "prodclass.mlflowUrl" . -}}
{{- else -}}
{{- required "settings.PRODCLASS_MLFLOW_TRACKING_URI is required when mlflow.enabled is false (the API loads its model from that MLflow server)" .Values.settings.PRODCLASS_MLFLOW_TRACKING_URI -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the API and the migrations job. */}}
{{- define "prodclass.envFrom" -}}
- configMapRef:
    name: {{ include "prodclass.fullname" . }}-settings
- secretRef:
    name: {{ include "prodclass.secretName" . }}
{{- end -}}

{{- define "prodclass.podSecurity" -}}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: false
{{- end -}}

{{/* A writable /tmp (the root file system is read-only) and HOME there for library caches. */}}
{{- define "prodclass.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{/* The Dagster instance's folder in the API pods: its dagster.yaml comes from a ConfigMap. */}}
{{- define "prodclass.dagsterHome" -}}
{{- printf "%s/dagster" .Values.settings.PRODCLASS_STATE_DIR -}}
{{- end -}}
