{{/* Names, labels and the environment every VGW container shares. */}}
{{- define "vgw.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vgw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vgw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vgw
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "config") */}}
{{- define "vgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vgw.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vgw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vgw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vgw.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "vgw.nodeImage" -}}
{{- printf "%s:%s" .Values.image.nodeRepository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "vgw.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats.%s.svc:4222" .Release.Name .Release.Namespace -}}
{{- else -}}
{{- required "natsUrl is required when nats.enabled is false" .Values.natsUrl -}}
{{- end -}}
{{- end -}}

{{/* env of a VGW container: (dict "ctx" $ "service" "config" "port" 9101 "extra" .Values.config.env) */}}
{{- define "vgw.env" -}}
- name: VGW_NATS_URL
  value: {{ include "vgw.natsUrl" .ctx | quote }}
- name: VGW_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int .port) | quote }}
- name: VGW_LOG_LEVEL
  value: {{ .ctx.Values.logLevel | quote }}
- name: VGW_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_SERVICE_NAME
  value: {{ printf "vgw-%s" .service | quote }}
{{- if .ctx.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .ctx.Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .ctx.Values.otel.protocol | quote }}
{{- else }}
- name: OTEL_TRACES_EXPORTER
  value: "none"
{{- end }}
{{- if .ctx.Values.natsCredsSecret }}
- name: VGW_NATS_CREDS
  value: /etc/vgw/nats/nats.creds
{{- end }}
{{- range $k, $v := .ctx.Values.extraEnv }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- range $k, $v := .extra }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "vgw.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: metrics}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "vgw.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "vgw.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- range $k, $v := .ctx.Values.podAnnotations }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "vgw.natsCredsVolume" -}}
{{- if .Values.natsCredsSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.natsCredsSecret }}
{{- end }}
{{- end -}}

{{- define "vgw.natsCredsMount" -}}
{{- if .Values.natsCredsSecret }}
- name: nats-creds
  mountPath: /etc/vgw/nats
  readOnly: true
{{- end }}
{{- end -}}
