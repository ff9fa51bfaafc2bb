{{/*
Deployment of one of the platform's services: (dict "root" $ "component" "<name>"), or a context
of facerestore.workloads (a restoration worker group: its own name, kind "inference" and values).
*/}}
{{- define "facerestore.deployment" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $values := .values | default (index $root.Values $component) }}
{{- $kind := .kind | default $component }}
{{- $spec := index (include "facerestore.components" $root | fromYaml) $kind }}
{{- $metricsPort := include "facerestore.metricsPort" $root | int }}
{{- $secretName := include "facerestore.secretName" $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "facerestore.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facerestore.labels" . | nindent 4 }}
spec:
  {{- /* An HPA or KEDA owns the replica count: rendering it would reset the count on every upgrade. */}}
  {{- if not (include "facerestore.autoscaled" .) }}
  replicas: {{ $values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "facerestore.selectorLabels" . | nindent 6 }}
  {{- with $values.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "facerestore.selectorLabels" . | nindent 8 }}
      annotations:
        {{- include "facerestore.checksumAnnotations" $root | nindent 8 }}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with include "facerestore.scheduling" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- if and (eq $spec.server "worker") $values.models.fetch.enabled }}
      initContainers:
        # Copies the pinned weights from the models bucket, each checked against its SHA-256;
        # a missing object or a digest that differs stops the pod before the worker starts.
        - name: fetch-weights
          image: {{ include "facerestore.image" (dict "root" $root "image" $values.image "default" $spec.image) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [python, -m, inference_service.fetch_weights]
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          envFrom:
            - configMapRef:
                name: {{ include "facerestore.configName" $root }}
          env:
            - name: MODEL_DIR
              value: /var/lib/facerestore/models
            - name: MODELS_BUCKET
              value: {{ $values.models.fetch.bucket | quote }}
            - name: MODELS_PREFIX
              value: {{ $values.models.fetch.prefix | quote }}
            - name: MODEL_SHA256SUMS
              value: {{ required (printf "%s.models.fetch.sha256sums: the sha256sum listing of the weights to fetch" $component) $values.models.fetch.sha256sums | quote }}
            {{- range list "S3_ENDPOINT" "S3_ACCESS_KEY" "S3_SECRET_KEY" }}
            - name: {{ . }}
              valueFrom:
                secretKeyRef:
                  name: {{ $secretName }}
                  key: {{ . }}
            {{- end }}
          resources:
            requests: {cpu: 100m, memory: 128Mi}
            limits: {cpu: "1", memory: 256Mi}
          volumeMounts:
            - name: models
              mountPath: /var/lib/facerestore/models
            - name: tmp
              mountPath: /tmp
      {{- end }}
      containers:
        - name: {{ $kind }}
          image: {{ include "facerestore.image" (dict "root" $root "image" $values.image "default" $spec.image) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          ports:
            {{- if ne $spec.server "worker" }}
            - name: {{ $spec.server }}
              containerPort: {{ $spec.port }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $metricsPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "facerestore.configName" $root }}
          env:
            - name: SERVICE_NAME
              value: {{ $kind }}
            {{- if eq $spec.server "grpc" }}
            - name: GRPC_PORT
              value: {{ $spec.port | quote }}
            {{- else if eq $spec.server "http" }}
            - name: HTTP_PORT
              value: {{ $spec.port | quote }}
            - name: TRUSTED_PROXIES
              value: {{ join "," $values.trustedProxies | quote }}
            {{- with include "facerestore.publicBaseUrl" $root }}
            - name: PUBLIC_BASE_URL
              value: {{ . | quote }}
            {{- else }}
            {{- if eq $root.Values.environment "production" }}
            {{- fail "gateway.publicBaseUrl (or ingress.hosts): the https address clients reach the API at" }}
            {{- end }}
            {{- end }}
            {{- else }}
            - name: INFERENCE_ROLES
              value: {{ $spec.roles }}
            - name: DEVICE
              value: {{ $values.device }}
            - name: MODEL_DIR
              value: /var/lib/facerestore/models
            {{- with .group }}
            # The families this group serves: the queues it consumes, the models it offers.
            - name: RESTORERS
              value: {{ join "," .restorers | quote }}
            - name: WORKER_GROUP
              value: {{ .name | quote }}
            {{- if and $values.keda.enabled (eq (int $values.keda.minReplicaCount) 0) }}
            # Scaled to zero, the group still offers its models: KEDA starts a worker for a waiting message.
            - name: STANDBY_OFFER_SECONDS
              value: {{ $values.standbyOfferSeconds | quote }}
            {{- end }}
            {{- end }}
            {{- end }}
            {{- if eq $component "auth" }}
            - name: JWT_KEY_DIR
              value: /var/run/facerestore/jwt-keys
            {{- end }}
            {{- range $key, $value := $values.env }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
            {{- range $spec.secretEnv }}
            - name: {{ . }}
              valueFrom:
                secretKeyRef:
                  name: {{ $secretName }}
                  key: {{ . }}
            {{- end }}
            {{- range $spec.optionalSecretEnv }}
            - name: {{ . }}
              valueFrom:
                secretKeyRef:
                  name: {{ $secretName }}
                  key: {{ . }}
                  optional: true
            {{- end }}
          {{- if eq $spec.server "grpc" }}
          {{- /* Readiness follows the standard gRPC health, NOT_SERVING while MongoDB, Redis or the
              broker does not answer; liveness only asks whether the server accepts connections,
              so that a database outage takes pods out of the Service without restarting them.
              The server listens only once its dependencies answered (MongoDB, Redis, S3, the
              broker), which start-up waits up to config.startupWaitSeconds for in all: liveness
              applies after that (a minute to spare for the rest). */}}
          startupProbe:
            tcpSocket:
              port: grpc
            periodSeconds: 5
            failureThreshold: {{ add 12 (div (add (int $root.Values.config.startupWaitSeconds) 4) 5) }}
          readinessProbe:
            grpc:
              port: {{ $spec.port }}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            tcpSocket:
              port: grpc
            initialDelaySeconds: 10
            periodSeconds: 20
            failureThreshold: 3
          {{- else if eq $spec.server "http" }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            initialDelaySeconds: 10
            periodSeconds: 20
            failureThreshold: 3
          {{- else }}
          {{- /* /readyz: models loaded, broker connected, consuming. /healthz: the event loop and
              the consumer loop are alive and no message is held too long. */}}
          startupProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: {{ $values.startupProbe.periodSeconds }}
            failureThreshold: {{ $values.startupProbe.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            periodSeconds: 10
            failureThreshold: 3
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          {{- end }}
          resources:
            {{- include "facerestore.resources" . | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: var
              mountPath: /app/var
            {{- if eq $component "auth" }}
            - name: jwt-keys
              mountPath: /var/run/facerestore/jwt-keys
              readOnly: true
            {{- end }}
            {{- if eq $spec.server "worker" }}
            - name: models
              mountPath: /var/lib/facerestore/models
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        - name: var
          emptyDir:
            sizeLimit: {{ $values.varSizeLimit }}
        {{- if eq $component "auth" }}
        # RSA keys, one <kid>.pem each. Rotation adds a key to the Secret; the kubelet updates the
        # files and auth re-reads the directory every JWT_KEY_RELOAD_SECONDS, without a restart.
        - name: jwt-keys
          secret:
            secretName: {{ include "facerestore.jwtKeysSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if eq $spec.server "worker" }}
        # Weights (GFPGANv1.4.pth, models/buffalo_l): fetched from the models bucket by the init
        # container, or on a read-only claim the operator filled; with neither the worker runs
        # the weight-free backends (classical restorer, dlib analyser).
        - name: models
          {{- if $values.models.fetch.enabled }}
          emptyDir:
            sizeLimit: {{ $values.models.fetch.sizeLimit }}
          {{- else if $values.models.existingClaim }}
          persistentVolumeClaim:
            claimName: {{ $values.models.existingClaim }}
            readOnly: true
          {{- else }}
          emptyDir:
            sizeLimit: 1Mi
          {{- end }}
        {{- end }}
{{- end }}

{{/*
The Service of one component. gRPC services get a headless Service, so that clients resolve
every pod's address (dns:///<name>-grpc:<port>) and balance calls over them (round_robin);
the gateway a ClusterIP Service for the Ingress; workers one for their metrics.
*/}}
{{- define "facerestore.service" -}}
{{- $root := .root }}
{{- $spec := index (include "facerestore.components" $root | fromYaml) (.kind | default .component) }}
{{- $suffix := get (dict "grpc" "-grpc" "http" "" "worker" "-metrics") $spec.server -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ printf "%s%s" (include "facerestore.componentName" .) $suffix }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facerestore.labels" . | nindent 4 }}
spec:
  {{- if eq $spec.server "http" }}
  type: ClusterIP
  {{- else }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "facerestore.selectorLabels" . | nindent 4 }}
  ports:
    {{- if ne $spec.server "worker" }}
    - name: {{ $spec.server }}
      port: {{ $spec.port }}
      targetPort: {{ $spec.server }}
      protocol: TCP
      appProtocol: {{ $spec.server }}
    {{- end }}
    - name: metrics
      port: {{ include "facerestore.metricsPort" $root }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}

{{/* The component's Deployment and Service: (dict "root" $ "component" "<name>"), or a context of
facerestore.workloads. */}}
{{- define "facerestore.component" -}}
{{- if (.values | default (index .root.Values .component)).enabled }}
{{ include "facerestore.deployment" . }}
---
{{ include "facerestore.service" . }}
{{- end }}
{{- end }}
