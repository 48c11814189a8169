{{- define "pwsync.fullname" -}}
{{- printf "%s-pwsync" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pwsync.labels" -}}
app.kubernetes.io/name: pwsync
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "pwsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
