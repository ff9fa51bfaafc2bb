{{/*
An in-chart dependency: a one-replica StatefulSet with a data volume, and its headless Service.
Takes (dict "root" $ "component" "<name>" "uid" N "gid" N "ports" (list (dict "name" .. "port" ..))
"dataPath" "<dir>" "readOnlyRootFilesystem" bool "container" "<more container fields, YAML>"
"volumes" "<more volumes, YAML>").
*/}}
{{- define "facerestore.dependency" -}}
{{- $root := .root }}
{{- $values := index $root.Values.dependencies .component }}
{{- $name := include "facerestore.componentName" . -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facerestore.labels" . | nindent 4 }}
spec:
  serviceName: {{ $name }}
  replicas: 1
  selector:
    matchLabels:
      {{- include "facerestore.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "facerestore.selectorLabels" . | nindent 8 }}
      annotations:
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: {{ .uid }}
        runAsGroup: {{ .gid }}
        fsGroup: {{ .gid }}
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: {{ .component }}
          image: {{ printf "%s:%s" $values.image.repository $values.image.tag | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
            runAsNonRoot: true
            capabilities:
              drop: ["ALL"]
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
          {{- .container | nindent 10 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: {{ .dataPath }}
            - name: tmp
              mountPath: /tmp
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "facerestore.selectorLabels" . | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $values.storage.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $values.storage.size }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "facerestore.labels" . | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "facerestore.selectorLabels" . | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP
    {{- end }}
{{- end }}

{{/* A secretKeyRef env var from the chart's Secret: (dict "root" $ "name" "<ENV>" "key" "<KEY>"). */}}
{{- define "facerestore.secretEnvVar" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "facerestore.secretName" .root }}
      key: {{ .key }}
{{- end }}
