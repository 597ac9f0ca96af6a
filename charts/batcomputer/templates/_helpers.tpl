{{/* An image reference: repository@digest when a digest is given, else repository:tag. */}}
{{- define "batcomputer.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .appVersion }}
{{- end -}}
{{- end -}}

{{- define "batcomputer.labels" -}}
app.kubernetes.io/name: batcomputer-operator
app.kubernetes.io/part-of: batcomputer
{{- end -}}
