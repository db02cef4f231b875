{{/* The release's full name: the release name if it already says cml-operator. */}}
{{- define "cml-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cml-operator.serviceAccountName" -}}
{{- default (include "cml-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The selector labels: the same two keys as deploy/ (kustomize). */}}
{{- define "cml-operator.selectorLabels" -}}
app.kubernetes.io/name: cml-operator
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cml-operator.labels" -}}
app.kubernetes.io/name: cml-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: cml-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Objects kept as files (CRDs, admission policies: copies of crds/ by `make crds`), each given the
     chart's labels, plus `annotations` when given. Args: root, path, annotations. */}}
{{- define "cml-operator.fileObjects" -}}
{{- $labels := include "cml-operator.labels" .root | fromYaml }}
{{- range $doc := regexSplit "(?m)^---\\s*$" (.root.Files.Get .path) -1 }}
{{- $object := fromYaml $doc }}
{{- if $object }}
{{- $meta := $object.metadata }}
{{- $_ := set $meta "labels" (merge (default (dict) $meta.labels) $labels) }}
{{- with $.nameSuffix }}
{{- $_ := set $meta "name" (printf "%s%s" $meta.name .) }}
{{- if and $object.spec (hasKey $object.spec "policyName") }}
{{- $_ := set $object.spec "policyName" (printf "%s%s" $object.spec.policyName .) }}
{{- end }}
{{- end }}
{{- with $.annotations }}
{{- $_ := set $meta "annotations" (merge (default (dict) $meta.annotations) .) }}
{{- end }}
---
{{ toYaml $object }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "cml-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* The Lease's name: leaderElection.id, else the release's full name (two releases never share one). */}}
{{- define "cml-operator.leaderElectionId" -}}
{{- default (include "cml-operator.fullname" .) .Values.leaderElection.id -}}
{{- end -}}
