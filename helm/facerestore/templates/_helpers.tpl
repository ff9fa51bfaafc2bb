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

{{/* Labels. Takes (dict "root" $ "component" "<service>"); component may be left out. */}}
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

{{- define "facerestore.configName" -}}
{{- printf "%s-config" (include "facerestore.fullname" .) }}
{{- end }}

{{- define "facerestore.secretName" -}}
{{- .Values.external.existingSecret | default (printf "%s-external" (include "facerestore.fullname" .)) }}
{{- end }}

{{/* In-cluster gRPC target of a service: (dict "root" $ "component" "<service>"). */}}
{{- define "facerestore.grpcTarget" -}}
{{- $service := index .root.Values.services .component }}
{{- printf "%s-%s:%d" (include "facerestore.fullname" .root) .component (int $service.port) }}
{{- end }}

{{/*
Deployment and Service of one service: (dict "root" $ "component" "<service>").
*/}}
{{- define "facerestore.workload" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $service := index $root.Values.services $component }}
{{- $name := printf "%s-%s" (include "facerestore.fullname" $root) $component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facerestore.labels" . | nindent 4 }}
spec:
  replicas: {{ $service.replicas }}
  selector:
    matchLabels:
      {{- include "facerestore.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "facerestore.selectorLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $service.terminationGracePeriodSeconds | default 30 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $component }}
          image: {{ printf "%s:%s" $service.image.repository ($service.image.tag | default $root.Chart.AppVersion) | quote }}
          imagePullPolicy: {{ $root.Values.imagePullPolicy }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          ports:
            - name: {{ $service.protocol }}
              containerPort: {{ $service.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "facerestore.configName" $root }}
          env:
            - name: {{ get (dict "grpc" "GRPC_PORT" "http" "HTTP_PORT" "metrics" "METRICS_PORT") $service.protocol }}
              value: {{ $service.port | quote }}
            {{- if eq $component "auth" }}
            - name: JWT_KEY_DIR
              value: /var/run/facerestore/jwt-keys
            {{- end }}
            {{- range $key, $value := $service.env }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
            {{- range $service.secretEnv }}
            - name: {{ . }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "facerestore.secretName" $root }}
                  key: {{ . }}
            {{- end }}
            {{- range $service.optionalSecretEnv }}
            - name: {{ . }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "facerestore.secretName" $root }}
                  key: {{ . }}
                  optional: true
            {{- end }}
          {{- if eq $service.protocol "grpc" }}
          readinessProbe:
            grpc:
              port: {{ $service.port }}
            periodSeconds: 10
          livenessProbe:
            grpc:
              port: {{ $service.port }}
            initialDelaySeconds: 15
            periodSeconds: 20
          {{- else }}
          readinessProbe:
            httpGet:
              path: {{ ternary "/readyz" "/metrics" (eq $service.protocol "http") }}
              port: {{ $service.protocol }}
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: {{ ternary "/healthz" "/metrics" (eq $service.protocol "http") }}
              port: {{ $service.protocol }}
            initialDelaySeconds: 15
            periodSeconds: 20
          {{- end }}
          resources:
            {{- toYaml $service.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if eq $component "auth" }}
            - name: jwt-keys
              mountPath: /var/run/facerestore/jwt-keys
              readOnly: {{ not (empty $service.signingKeysSecret) }}
            {{- end }}
            {{- if eq $component "inference" }}
            - name: models
              mountPath: /var/lib/facerestore/models
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if eq $component "auth" }}
        - name: jwt-keys
          {{- if $service.signingKeysSecret }}
          secret:
            secretName: {{ $service.signingKeysSecret }}
            defaultMode: 0440
          {{- else }}
          emptyDir:
            sizeLimit: 1Mi
          {{- end }}
        {{- end }}
        {{- if eq $component "inference" }}
        # Weights (GFPGANv1.4.pth, models/buffalo_l) put in place by the operator; without a
        # claim the volume is empty and the worker runs the weight-free backends.
        - name: models
          {{- if $service.modelsClaim }}
          persistentVolumeClaim:
            claimName: {{ $service.modelsClaim }}
            readOnly: true
          {{- else }}
          emptyDir:
            sizeLimit: 1Mi
          {{- end }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facerestore.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "facerestore.selectorLabels" . | nindent 4 }}
  ports:
    - name: {{ $service.protocol }}
      port: {{ $service.port }}
      targetPort: {{ $service.protocol }}
      protocol: TCP
      appProtocol: {{ ternary "grpc" "http" (eq $service.protocol "grpc") }}
{{- end }}
