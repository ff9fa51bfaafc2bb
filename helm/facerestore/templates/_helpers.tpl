{{/* Chart name, overridable. */}}
{{- define "facerestore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified prefix of every object name; "facerestore" for a release of that name. */}}
{{- define "facerestore.fullname" -}}
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

{{/* Name of one component's objects: (dict "root" $ "component" "<name>"). */}}
{{- define "facerestore.componentName" -}}
{{- printf "%s-%s" (include "facerestore.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels. Take (dict "root" $ "component" "<name>"); component may be left out. */}}
{{- define "facerestore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facerestore.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "facerestore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "facerestore.selectorLabels" . }}
app.kubernetes.io/part-of: facerestore
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/*
The platform's own services: their port, what kind of server they are and which keys of the
services Secret they get. Ports are the services' defaults; every one also serves /metrics on 9100.
*/}}
{{- define "facerestore.components" -}}
gateway:
  server: http
  port: 8080
  image: gateway
  secretEnv: [REDIS_URL, AMQP_URL]
  optionalSecretEnv: []
auth:
  server: grpc
  port: 50051
  image: auth
  secretEnv: [MONGO_URL, REDIS_URL, AMQP_URL, OTP_HMAC_SECRET, PSEUDONYM_SECRET]
  optionalSecretEnv: [TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_MESSAGING_SERVICE_SID, SMTP_PASSWORD]
upload:
  server: grpc
  port: 50052
  image: upload
  secretEnv: [MONGO_URL, AMQP_URL, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY]
  optionalSecretEnv: []
history:
  server: grpc
  port: 50053
  image: history
  # REDIS_URL: the library generations it raises after each write, for the gateway's page cache.
  secretEnv: [MONGO_URL, AMQP_URL, REDIS_URL, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, DOWNLOAD_TOKEN_SECRET, PSEUDONYM_SECRET]
  optionalSecretEnv: [QDRANT_API_KEY]
admin:
  server: grpc
  port: 50054
  image: admin
  secretEnv: [MONGO_URL, AMQP_URL, PSEUDONYM_SECRET]
  optionalSecretEnv: []
inference:
  server: worker
  port: 9100
  image: inference
  roles: restore
  # REDIS_URL: the model registry, where the workers offer the models they serve.
  secretEnv: [MONGO_URL, AMQP_URL, REDIS_URL, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY]
  optionalSecretEnv: []
embedder:
  server: worker
  port: 9100
  image: inference
  roles: embed
  secretEnv: [MONGO_URL, AMQP_URL, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY]
  optionalSecretEnv: []
{{- end }}

{{- define "facerestore.metricsPort" -}}9100{{- end }}

{{/* The components that are switched on, in a stable order; the restoration workers are one
per worker group, "inference-<group>". */}}
{{- define "facerestore.enabledComponents" -}}
{{- $names := list }}
{{- range $name := list "gateway" "auth" "upload" "history" "admin" "inference" "embedder" }}
{{- if (index $.Values $name).enabled }}
{{- if eq $name "inference" }}
{{- range $.Values.inference.workerGroups }}
{{- $names = append $names (printf "inference-%s" .name) }}
{{- end }}
{{- else }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
Every enabled component's template context, by its name in enabledComponents, set into .out:
(dict "root" $ "component" <name> "kind" <its entry in facerestore.components> "values" <its values>),
plus "group" for a restoration worker group. Call: (dict "root" $ "out" $contexts).
*/}}
{{- define "facerestore.workloads" -}}
{{- $root := .root }}
{{- range $name := list "gateway" "auth" "upload" "history" "admin" "inference" "embedder" }}
{{- $values := index $root.Values $name }}
{{- if $values.enabled }}
{{- if eq $name "inference" }}
{{- range $group := $values.workerGroups }}
{{- $merged := dict }}
{{- include "facerestore.workerGroupValues" (dict "defaults" $values "group" $group "out" $merged) }}
{{- $component := printf "inference-%s" $group.name }}
{{- $_ := set $.out $component (dict "root" $root "component" $component "kind" "inference" "values" $merged "group" $group) }}
{{- end }}
{{- else }}
{{- $_ := set $.out $name (dict "root" $root "component" $name "kind" $name "values" $values) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A worker group's values, set into .out: inference's, with the group's keys over them. A map the
group gives is merged one level deep into the default one (keda: {enabled: true} keeps the other
keda defaults), except nodeSelector and affinity, which replace it like lists and plain values:
a group is placed by its own rules only. A group with gpu > 0 and no image of its own runs
inference.gpuImage.
*/}}
{{- define "facerestore.workerGroupValues" -}}
{{- range $key, $value := omit .defaults "workerGroups" "gpuImage" }}
{{- $_ := set $.out $key (deepCopy $value) }}
{{- end }}
{{- range $key, $value := omit .group "name" "restorers" }}
{{- $base := index $.out $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $base) (not (has $key (list "nodeSelector" "affinity"))) }}
{{- range $inner, $innerValue := $value }}
{{- $_ := set $base $inner (deepCopy $innerValue) }}
{{- end }}
{{- else }}
{{- $_ := set $.out $key (deepCopy $value) }}
{{- end }}
{{- end }}
{{- if and (not (hasKey .group "image")) (gt (int (index $.out "gpu")) 0) }}
{{- $_ := set $.out "image" (deepCopy .defaults.gpuImage) }}
{{- end }}
{{- end }}

{{- define "facerestore.configName" -}}
{{- printf "%s-config" (include "facerestore.fullname" .) }}
{{- end }}

{{/* The Secret every service reads its credentials and endpoints from. */}}
{{- define "facerestore.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-env" (include "facerestore.fullname" .)) }}
{{- end }}

{{- define "facerestore.jwtKeysSecretName" -}}
{{- .Values.jwtKeys.secretName | default (printf "%s-jwt-keys" (include "facerestore.fullname" .)) }}
{{- end }}

{{/* In-cluster gRPC target of a service, through its headless Service: (dict "root" $ "component" "<name>"). */}}
{{/* Where clients reach the API (the gateway's PUBLIC_BASE_URL, image links start with it):
gateway.publicBaseUrl, else the first Ingress host, https when the Ingress has TLS. */}}
{{- define "facerestore.publicBaseUrl" -}}
{{- if .Values.gateway.publicBaseUrl -}}
{{- .Values.gateway.publicBaseUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) (first .Values.ingress.hosts) -}}
{{- end -}}
{{- end }}

{{- define "facerestore.grpcTarget" -}}
{{- $component := index (include "facerestore.components" .root | fromYaml) .component }}
{{- printf "dns:///%s-grpc:%d" (include "facerestore.componentName" .) (int $component.port) }}
{{- end }}

{{/* Image reference: (dict "root" $ "image" <values image block> "default" "<name>"). */}}
{{- define "facerestore.image" -}}
{{- $repository := .image.repository | default (printf "facerestore/%s" .default) }}
{{- printf "%s%s:%s" .root.Values.image.registry $repository (.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{/* The most pods a component may run: KEDA's or the HPA's maximum, else its replicas. */}}
{{- define "facerestore.maxReplicas" -}}
{{- $values := .values | default (index .root.Values .component) }}
{{- if and $values.keda $values.keda.enabled }}
{{- $values.keda.maxReplicaCount }}
{{- else if and $values.autoscaling $values.autoscaling.enabled }}
{{- $values.autoscaling.maxReplicas }}
{{- else }}
{{- $values.replicas }}
{{- end }}
{{- end }}

{{/* Whether a component's replica count is left to an autoscaler (HPA or KEDA): "true" or "". */}}
{{- define "facerestore.autoscaled" -}}
{{- $values := .values | default (index .root.Values .component) }}
{{- if or (and $values.keda $values.keda.enabled) (and $values.autoscaling $values.autoscaling.enabled) }}true{{- end }}
{{- end }}

{{/* Whether a component can run more than one pod, so that spreading matters: "true" or "". */}}
{{- define "facerestore.multiReplica" -}}
{{- if gt (int (include "facerestore.maxReplicas" .)) 1 }}true{{- end }}
{{- end }}

{{/* Pod-level scheduling: GPU placement and priority, set per component. */}}
{{- define "facerestore.scheduling" -}}
{{- $values := .values | default (index .root.Values .component) }}
{{- with $values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $values.topologySpread.enabled (include "facerestore.multiReplica" .) }}
topologySpreadConstraints:
  {{- range $values.topologySpread.topologyKeys }}
  - maxSkew: {{ $values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "facerestore.selectorLabels" $ | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
  {{- end }}
{{- end }}
{{- end }}

{{/* Container resources with the GPU count added to requests and limits. */}}
{{- define "facerestore.resources" -}}
{{- $values := .values | default (index .root.Values .component) }}
{{- $resources := deepCopy ($values.resources | default dict) }}
{{- if gt (int ($values.gpu | default 0)) 0 }}
{{- $gpu := int $values.gpu }}
{{- $resourceName := .root.Values.gpuResourceName }}
{{- $_ := set $resources "limits" (merge (dict $resourceName $gpu) ($resources.limits | default dict)) }}
{{- $_ := set $resources "requests" (merge (dict $resourceName $gpu) ($resources.requests | default dict)) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* Pods of in-chart dependencies or of a component, for NetworkPolicy peers. */}}
{{- define "facerestore.podPeer" -}}
- podSelector:
    matchLabels:
      {{- include "facerestore.selectorLabels" . | nindent 6 }}
{{- end }}

{{/*
Egress to one dependency (mongodb, rabbitmq, redis, minio, qdrant): the in-chart StatefulSet's pods
when it is enabled, else the peers and ports the operator lists under networkPolicy.external.
*/}}
{{- define "facerestore.dependencyEgress" -}}
{{- $dependency := index .root.Values.dependencies .dependency }}
{{- if $dependency.enabled }}
- to:
    {{- include "facerestore.podPeer" (dict "root" .root "component" .dependency) | nindent 4 }}
  ports:
    {{- range (include "facerestore.dependencyPorts" . | fromJsonArray) }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- else }}
{{- $external := index .root.Values.networkPolicy.external .dependency }}
{{- if $external.to }}
- to:
    {{- toYaml $external.to | nindent 4 }}
  ports:
    {{- range $external.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The client ports of an in-chart dependency. */}}
{{- define "facerestore.dependencyPorts" -}}
{{- $ports := dict "mongodb" (list 27017) "rabbitmq" (list 5672) "redis" (list 6379) "minio" (list 9000) "qdrant" (list 6333 6334) }}
{{- index $ports .dependency | toJson }}
{{- end }}

{{/* Pod annotations that roll the pods when their configuration or credentials change. */}}
{{- define "facerestore.checksumAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.secrets.existingSecret }}
{{- /* The Secret is not ours: its data as the cluster has it when installing or upgrading. */}}
checksum/secret: {{ (lookup "v1" "Secret" .Release.Namespace .Values.secrets.existingSecret).data | toJson | sha256sum }}
{{- else }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}
