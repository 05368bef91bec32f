{{/*
Name of the chart, overridable.
*/}}
{{- define "moderation.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's resources: release-chart, or the release name when it already contains the chart name.
*/}}
{{- define "moderation.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Namespace of every resource.
*/}}
{{- define "moderation.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "moderation.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels that select the worker pods.
*/}}
{{- define "moderation.selectorLabels" -}}
app.kubernetes.io/name: {{ include "moderation.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{/*
Labels of every resource.
*/}}
{{- define "moderation.labels" -}}
helm.sh/chart: {{ include "moderation.chart" . }}
{{ include "moderation.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: moderation
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "moderation.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "moderation.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The worker image: registry/repository, then @digest or :tag (appVersion, plus the GPU suffix on GPU nodes).
*/}}
{{- define "moderation.image" -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- $tag := .Values.image.tag -}}
{{- if not $tag -}}
{{- $tag = printf "%s%s" .Chart.AppVersion (ternary .Values.image.gpuTagSuffix "" .Values.gpu.enabled) -}}
{{- end -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Torch device of the workers.
*/}}
{{- define "moderation.device" -}}
{{- default (ternary "cuda" "cpu" .Values.gpu.enabled) .Values.worker.device -}}
{{- end -}}

{{/*
Name of the policy ConfigMap, or empty when the model's own policy is used.
*/}}
{{- define "moderation.policyConfigMap" -}}
{{- if .Values.policy.existingConfigMap -}}
{{- .Values.policy.existingConfigMap -}}
{{- else if .Values.policy.create -}}
{{- printf "%s-policy" (include "moderation.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The most pods autoscaling may run: autoscaling.maxReplicas, or when it is 0 as many as the partitions keep busy
(partitions / worker.processes, at least 1).
*/}}
{{- define "moderation.maxReplicas" -}}
{{- if gt (int .Values.autoscaling.maxReplicas) 0 -}}
{{- .Values.autoscaling.maxReplicas -}}
{{- else -}}
{{- max 1 (div (int .Values.kafka.partitions) (int .Values.worker.processes)) -}}
{{- end -}}
{{- end -}}

{{/*
True when SASL is on.
*/}}
{{- define "moderation.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{/*
True when TLS is on.
*/}}
{{- define "moderation.tls" -}}
{{- if hasSuffix "SSL" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{/*
True when the workers have a Redis URL.
*/}}
{{- define "moderation.redis" -}}
{{- if or .Values.redis.existingSecret .Values.redis.url -}}true{{- end -}}
{{- end -}}

{{/*
Checks across values that a JSON schema cannot express; a failed check stops the render with its reason.
*/}}
{{- define "moderation.validate" -}}
{{- $partitions := int .Values.kafka.partitions -}}
{{- $processes := int .Values.worker.processes -}}
{{- if not .Values.allowReplicasAbovePartitions -}}
{{- if gt (mul (int .Values.replicaCount) $processes) $partitions -}}
{{- fail (printf "replicaCount %d x worker.processes %d exceeds kafka.partitions %d: the extra workers would sit idle (set allowReplicasAbovePartitions to allow it)" (int .Values.replicaCount) $processes $partitions) -}}
{{- end -}}
{{- if gt (mul (int (include "moderation.maxReplicas" .)) $processes) $partitions -}}
{{- fail (printf "autoscaling.maxReplicas %d x worker.processes %d exceeds kafka.partitions %d: the extra workers would sit idle (set allowReplicasAbovePartitions to allow it)" (int (include "moderation.maxReplicas" .)) $processes $partitions) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int (include "moderation.maxReplicas" .))) -}}
{{- fail (printf "autoscaling.minReplicas %d exceeds the most replicas %s" (int .Values.autoscaling.minReplicas) (include "moderation.maxReplicas" .)) -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (mul 2 (int .Values.worker.maxBatchSeconds)) -}}
{{- fail (printf "terminationGracePeriodSeconds %d must exceed twice worker.maxBatchSeconds %d, so a stopping worker finishes the batches in hand (two of them may still need the models)" (int .Values.terminationGracePeriodSeconds) (int .Values.worker.maxBatchSeconds)) -}}
{{- end -}}
{{- if and (include "moderation.sasl" .) (not .Values.kafka.sasl.existingSecret) -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.existingSecret: a Secret you create with the SASL user name and password" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- if and .Values.kafka.tls.certKey (not .Values.kafka.tls.keyKey) -}}
{{- fail "kafka.tls.certKey needs kafka.tls.keyKey (the client private key)" -}}
{{- end -}}
{{- if and (or .Values.kafka.tls.certKey .Values.kafka.tls.keyKey) (not .Values.kafka.tls.existingSecret) -}}
{{- fail "kafka.tls.certKey and keyKey need kafka.tls.existingSecret" -}}
{{- end -}}
{{- if and .Values.autoscaling.keda.enabled (not .Values.autoscaling.enabled) -}}
{{- fail "autoscaling.keda.enabled needs autoscaling.enabled" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.keda.enabled (eq .Values.autoscaling.keda.trigger "kafka") (include "moderation.sasl" .) (not .Values.autoscaling.keda.authenticationRef) -}}
{{- fail "the KEDA kafka trigger on a SASL broker needs autoscaling.keda.authenticationRef: a TriggerAuthentication with the SASL credentials" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.keda.enabled) (not .Values.autoscaling.lagMetric.enabled) (eq (int .Values.autoscaling.targetCPUUtilizationPercentage) 0) -}}
{{- fail "the HPA needs a metric: set autoscaling.targetCPUUtilizationPercentage or enable autoscaling.lagMetric" -}}
{{- end -}}
{{- end -}}
