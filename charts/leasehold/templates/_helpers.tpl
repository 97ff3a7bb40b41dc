{{/* The chart name, for labels. */}}
{{- define "leasehold.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, for object names: the release name alone when it
already contains the chart name (`helm install leasehold ...` gives
"leasehold", not "leasehold-leasehold"). 63 characters: some names end up in
label values.
*/}}
{{- define "leasehold.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "leasehold.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that pick this release's pods; they never change after install. */}}
{{- define "leasehold.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leasehold.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels on every object. */}}
{{- define "leasehold.labels" -}}
helm.sh/chart: {{ include "leasehold.chart" . }}
{{ include "leasehold.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: leasehold
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "leasehold.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "leasehold.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The election Lease; replicas with the same one form one group. */}}
{{- define "leasehold.leaseName" -}}
{{- default (include "leasehold.fullname" .) .Values.election.leaseName }}
{{- end }}

{{/*
Cluster-scoped objects carry the namespace in their name, so the same release
name in two namespaces does not collide.
*/}}
{{- define "leasehold.clusterRoleName" -}}
{{- printf "%s-%s" (include "leasehold.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "leasehold.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The port `leasehold run --listen` binds; the probes and the Service use it by name. */}}
{{- define "leasehold.apiPort" -}}
8080
{{- end }}

{{/*
Milliseconds in a duration that values.schema.json has already checked
(digits followed by h, m, s or ms, repeated).
*/}}
{{- define "leasehold.durationMillis" -}}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+(ms|h|m|s)" . -1 }}
{{- $amount := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $amount . }}
{{- $scale := get (dict "h" 3600000 "m" 60000 "s" 1000 "ms" 1) $unit }}
{{- $total = add $total (mul (int64 $amount) $scale) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
Refuses values the host would refuse at start, so a bad upgrade fails at
`helm upgrade` instead of crash-looping the new pods. The schema checks each
value; this checks how they relate (the host's own rules, from client-go).
*/}}
{{- define "leasehold.validate" -}}
{{- $e := .Values.election }}
{{- $lease := include "leasehold.durationMillis" $e.leaseDuration | int64 }}
{{- $deadline := include "leasehold.durationMillis" $e.renewDeadline | int64 }}
{{- $retry := include "leasehold.durationMillis" $e.retryPeriod | int64 }}
{{- range $name, $millis := dict "leaseDuration" $lease "renewDeadline" $deadline "retryPeriod" $retry }}
{{- if le $millis 0 }}
{{- fail (printf "election.%s must be greater than zero" $name) }}
{{- end }}
{{- end }}
{{- if le $lease $deadline }}
{{- fail (printf "election.leaseDuration (%s) must be greater than election.renewDeadline (%s): a leader must stop before its Lease can expire" $e.leaseDuration $e.renewDeadline) }}
{{- end }}
{{- /* renewDeadline > 1.2 × retryPeriod, in integers: 5 × deadline > 6 × retry. */}}
{{- if le (mul $deadline 5) (mul $retry 6) }}
{{- fail (printf "election.renewDeadline (%s) must be greater than 1.2 × election.retryPeriod (%s): a leader needs at least one retry before it steps down" $e.renewDeadline $e.retryPeriod) }}
{{- end }}
{{- if .Values.plugins }}
{{- fail "plugins: Plugin objects are not supported by this chart version yet (they come with the Plugin CRD); leave plugins empty" }}
{{- end }}
{{- end }}
