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

{{/* The standard labels on every object; the component says which part. */}}
{{- define "leasehold.commonLabels" -}}
helm.sh/chart: {{ include "leasehold.chart" . }}
{{ include "leasehold.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/part-of: leasehold
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "leasehold.labels" -}}
{{ include "leasehold.commonLabels" . }}
app.kubernetes.io/component: control-plane
{{- end }}

{{/* On declared plugins: the Plugin objects and the identities made for them. */}}
{{- define "leasehold.pluginLabels" -}}
{{ include "leasehold.commonLabels" . }}
app.kubernetes.io/component: plugin
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

{{/* The API port's name, in the container, the Service and the ServiceMonitor. */}}
{{- define "leasehold.apiPortName" -}}
{{- ternary "https" "http" .Values.tls.enabled }}
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
{{- end }}

{{/*
Bytes in a quantity that values.schema.json has already checked (at most 9
digits, then Ki, Mi, Gi or nothing, so the product fits in an int64).
*/}}
{{- define "leasehold.bytes" -}}
{{- $amount := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $amount . }}
{{- mul (int64 $amount) (get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824) $unit) }}
{{- end }}

{{/*
Refuses plugin declarations the schema cannot judge one value at a time,
or not clearly: a source that is not exactly one kind; the same Plugin
twice; a plugin acting as the replicas' own ServiceAccount,
which would hand it the host's rights; and limits the host refuses when it
loads the plugin (memory above 512Mi, a timeout outside 1ms to 5m), which
would otherwise show only on the Plugin's status after the install.
*/}}
{{- define "leasehold.validatePlugins" -}}
{{- $seen := dict }}
{{- $own := include "leasehold.serviceAccountName" . }}
{{- range $index, $plugin := .Values.plugins }}
{{- $namespace := $plugin.namespace | default $.Release.Namespace }}
{{- $key := printf "%s/%s" $namespace $plugin.name }}
{{- $at := printf "plugins[%d] (Plugin %s)" $index $key }}
{{- if hasKey $seen $key }}
{{- fail (printf "%s: plugins[%d] already declares this Plugin; names must be unique in a namespace" $at (get $seen $key)) }}
{{- end }}
{{- $_ := set $seen $key $index }}
{{- $sources := keys $plugin.source | sortAlpha }}
{{- if ne (len $sources) 1 }}
{{- fail (printf "%s: source must set exactly one of configMap, http, oci, image; it sets %s" $at (ternary "none" (join " and " $sources) (empty $sources))) }}
{{- end }}
{{- if and (eq $namespace $.Release.Namespace) (eq $plugin.serviceAccountName $own) }}
{{- fail (printf "%s: serviceAccountName %q is the ServiceAccount the replicas run as, and would give the plugin the host's rights; give the plugin its own" $at $own) }}
{{- end }}
{{- with $plugin.limits }}
{{- if and .memory (gt (include "leasehold.bytes" .memory | int64) (mul 512 1048576)) }}
{{- fail (printf "%s: limits.memory %s is more than the host allows a plugin (512Mi)" $at .memory) }}
{{- end }}
{{- if .timeout }}
{{- $millis := include "leasehold.durationMillis" .timeout | int64 }}
{{- if or (le $millis 0) (gt $millis 300000) }}
{{- fail (printf "%s: limits.timeout %s must be between 1ms and 5m" $at .timeout) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where the compile cache volume is mounted and what --compile-cache names:
wasmtime keeps its compiled plugins under it, per wasmtime version.
*/}}
{{- define "leasehold.compileCachePath" -}}
/var/cache/leasehold
{{- end }}

{{- define "leasehold.compileCacheClaimName" -}}
{{- printf "%s-compile-cache" (include "leasehold.fullname" .) | trunc 253 }}
{{- end }}

{{/* The volumes the chart itself gives the pod; extraVolumes may not reuse their names. */}}
{{- define "leasehold.ownVolumes" -}}
{{- $own := list }}
{{- if .Values.compileCache.enabled }}
{{- $own = append $own "compile-cache" }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $own = append $own "tls" }}
{{- end }}
{{- toJson $own }}
{{- end }}

{{/*
Refuses volumes the API server would refuse only once the upgrade has
begun, or that are ambiguous: an extra volume with a name the chart's own
volumes use, two volumes of one name, a mount of a volume the pod does not
have, and a compile cache on two claims at once.
*/}}
{{- define "leasehold.validateVolumes" -}}
{{- with .Values.compileCache.persistentVolumeClaim }}
{{- if and $.Values.compileCache.enabled .existingClaim .create }}
{{- fail (printf "compileCache.persistentVolumeClaim: existingClaim (%s) and create are two claims for one cache; set one" .existingClaim) }}
{{- end }}
{{- end }}
{{- $own := include "leasehold.ownVolumes" . | fromJsonArray }}
{{- $declared := dict }}
{{- range $index, $volume := .Values.extraVolumes }}
{{- if has $volume.name $own }}
{{- fail (printf "extraVolumes[%d]: %q is the name of the chart's own volume; pick another" $index $volume.name) }}
{{- end }}
{{- if hasKey $declared $volume.name }}
{{- fail (printf "extraVolumes[%d]: extraVolumes[%d] is already named %q" $index (get $declared $volume.name) $volume.name) }}
{{- end }}
{{- $_ := set $declared $volume.name $index }}
{{- end }}
{{- range $index, $mount := .Values.extraVolumeMounts }}
{{- if not (or (hasKey $declared $mount.name) (has $mount.name $own)) }}
{{- fail (printf "extraVolumeMounts[%d] mounts %q, which is not in extraVolumes" $index $mount.name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Where the API's certificate Secret is mounted: its tls.crt and tls.key are
passed as --tls-cert-file and --tls-private-key-file.
*/}}
{{- define "leasehold.tlsPath" -}}
/etc/leasehold/tls
{{- end }}

{{/* The Secret the API's certificate is in: the operator's, or the one the chart has made or had cert-manager make. */}}
{{- define "leasehold.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "leasehold.fullname" .)) }}
{{- end }}

{{/* "true" when the chart generates the certificate itself (neither an existing Secret nor cert-manager). */}}
{{- define "leasehold.tlsGenerated" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) (not .Values.tls.certManager.enabled) (not .Values.tls.issuedByReplicas) }}true{{ end }}
{{- end }}

{{/*
The names the certificates the chart makes (generated or cert-manager's)
are valid for, as a JSON list: the Service's, as clients in the cluster
reach it, then tls.extraDnsNames.
*/}}
{{- define "leasehold.tlsDnsNames" -}}
{{- $service := include "leasehold.fullname" . }}
{{- $namespace := .Release.Namespace }}
{{- $names := list
  $service
  (printf "%s.%s" $service $namespace)
  (printf "%s.%s.svc" $service $namespace)
  (printf "%s.%s.svc.cluster.local" $service $namespace) }}
{{- concat $names .Values.tls.extraDnsNames | uniq | toJson }}
{{- end }}

{{/*
Refuses TLS settings that name two sources for the certificate, or a
cert-manager Certificate without an issuer, which cert-manager would only
refuse after the install, leaving the replicas without their Secret.
*/}}
{{- define "leasehold.validateTls" -}}
{{- with .Values.tls }}
{{- if .enabled }}
{{- if and .secretName .certManager.enabled }}
{{- fail (printf "tls.secretName (%s) and tls.certManager.enabled are two sources for one certificate; set one" .secretName) }}
{{- end }}
{{- if and .issuedByReplicas (or .secretName .certManager.enabled) }}
{{- fail "tls.issuedByReplicas and tls.secretName or tls.certManager.enabled are two sources for one certificate; set one" }}
{{- end }}
{{- if and .certManager.enabled (not .certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name is required: the Issuer or ClusterIssuer that signs the certificate" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
How long the CA and certificate the chart generates are valid, in days: ten
years, because nothing renews them (delete the Secret and upgrade for new
ones). cert-manager is the choice for certificates that rotate.
*/}}
{{- define "leasehold.tlsGeneratedDays" -}}
3650
{{- end }}
