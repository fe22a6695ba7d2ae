{{/* vim: set filetype=mustache: */}}
{{/*
Expand the name of the chart.
*/}}
{{- define "flight-delay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated to 63 characters because some Kubernetes
name fields are limited to that (by the DNS naming spec). If the release name contains the chart
name it is used as the full name.
*/}}
{{- define "flight-delay.fullname" -}}
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

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "flight-delay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "flight-delay.labels" -}}
helm.sh/chart: {{ include "flight-delay.chart" . }}
{{ include "flight-delay.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flight-delay-mlops
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "flight-delay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flight-delay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the InferenceService: the model name, so that /v1/models/<name> and the host agree.
*/}}
{{- define "flight-delay.isvcName" -}}
{{- .Values.model.name }}
{{- end }}

{{/*
Name of the request log's PVC (the monitoring pipeline's requests_pvc):
requestLog.persistence.claimName, else "<fullname>-requests". The registry's is
flight-delay.registryClaimName below.
*/}}
{{- define "flight-delay.requestLogClaimName" -}}
{{- default (include "flight-delay.componentName" (dict "root" . "suffix" "requests")) .Values.requestLog.persistence.claimName }}
{{- end }}

{{/*
Name of the serving service account.
*/}}
{{- define "flight-delay.servingServiceAccountName" -}}
{{- if .Values.inferenceService.serviceAccount.create }}
{{- default (include "flight-delay.componentName" (dict "root" . "suffix" "serving")) .Values.inferenceService.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.inferenceService.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image of the project: <registry>/<name>:<tag>, the tag defaulting to the appVersion.
Usage: include "flight-delay.image" (dict "root" . "name" "serving")
*/}}
{{- define "flight-delay.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag }}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .name $tag }}
{{- end }}

{{- define "flight-delay.feastName" -}}
{{- include "flight-delay.componentName" (dict "root" . "suffix" "feast") }}
{{- end }}

{{- define "flight-delay.redisName" -}}
{{- include "flight-delay.componentName" (dict "root" . "suffix" "redis") }}
{{- end }}

{{/*
URL of the Feast feature server the transformer calls.
*/}}
{{- define "flight-delay.feastUrl" -}}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "flight-delay.feastName" .) .Release.Namespace (int .Values.feast.port) }}
{{- end }}

{{/*
Redis connection string of the online store: the in-chart Redis when enabled.
*/}}
{{- define "flight-delay.redisConnection" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s.%s.svc.cluster.local:6379" (include "flight-delay.redisName" .) .Release.Namespace }}
{{- else }}
{{- required "feast.onlineStore.connectionString is required when redis.enabled is false" .Values.feast.onlineStore.connectionString }}
{{- end }}
{{- end }}

{{/*
Container security context shared by every container: non-root, read-only root filesystem,
no privilege escalation, no capabilities, the runtime's default seccomp profile.
*/}}
{{- define "flight-delay.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod security context shared by every pod.
*/}}
{{- define "flight-delay.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod-level settings of the predictor and the transformer. Knative (Serverless mode) accepts a pod
securityContext only with its kubernetes.podspec-securitycontext flag, so the pod-level context is
set in RawDeployment mode; the container-level context (always accepted) carries the same rules.
Usage: include "flight-delay.isvcPodExtras" . (predictor), or
(merge (dict "requestLog" true) .) to add the request log's volume (transformer).
*/}}
{{- define "flight-delay.isvcPodExtras" -}}
automountServiceAccountToken: false
{{- if eq .Values.inferenceService.deploymentMode "RawDeployment" }}
securityContext:
  {{- include "flight-delay.podSecurityContext" . | nindent 2 }}
{{- end }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  # The root filesystem is read-only; TensorFlow and the model server write temp files here.
  - name: tmp
    emptyDir:
      sizeLimit: 256Mi
{{- if and (get . "requestLog") .Values.requestLog.enabled }}
  # The request log the monitoring pipeline reads (shared by the transformer replicas).
  - name: request-log
    persistentVolumeClaim:
      claimName: {{ include "flight-delay.requestLogClaimName" . }}
{{- end }}
{{- end }}

{{/*
Container settings shared by the predictor and the transformer.
Usage: include "flight-delay.isvcContainerExtras" (dict "root" . "resources" $resources), with
"requestLog" true to mount the request log (transformer).
*/}}
{{- define "flight-delay.isvcContainerExtras" -}}
ports:
  - name: http1
    containerPort: 8080
    protocol: TCP
readinessProbe:
  httpGet:
    path: /v1/models/{{ .root.Values.model.name }}
    port: 8080
  periodSeconds: 10
livenessProbe:
  httpGet:
    path: /v2/health/live
    port: 8080
  periodSeconds: 20
  failureThreshold: 3
resources:
  {{- toYaml .resources | nindent 2 }}
securityContext:
  {{- include "flight-delay.containerSecurityContext" .root | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if and (get . "requestLog") .root.Values.requestLog.enabled }}
  - name: request-log
    mountPath: {{ .root.Values.requestLog.mountPath }}
{{- end }}
{{- end }}

{{/*
feature_store.yaml of the feature server.
*/}}
{{- define "flight-delay.feastStoreYaml" -}}
project: {{ $.Values.feast.project }}
registry: {{ $.Values.feast.registry }}
provider: local
online_store:
{{- if eq $.Values.feast.onlineStore.type "redis" }}
  type: redis
  connection_string: {{ include "flight-delay.redisConnection" $ | quote }}
{{- else }}
  type: sqlite
  path: {{ $.Values.feast.onlineStore.path }}
{{- end }}
entity_key_serialization_version: 2
{{- end }}

{{/*
Name of one part of the release: the full name cut so that "-<suffix>" still fits in 63
characters, so parts never collide after truncation.
Usage: include "flight-delay.componentName" (dict "root" . "suffix" "feast")
*/}}
{{- define "flight-delay.componentName" -}}
{{- $base := include "flight-delay.fullname" .root | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base .suffix }}
{{- end }}

{{/*
Name of the model registry's PVC: registry.persistence.claimName, else "<fullname>-registry".
*/}}
{{- define "flight-delay.registryClaimName" -}}
{{- $persistence := .Values.registry.persistence | default dict }}
{{- default (include "flight-delay.componentName" (dict "root" . "suffix" "registry")) $persistence.claimName }}
{{- end }}
