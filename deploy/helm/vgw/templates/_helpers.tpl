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
{{- printf "%s://%s-nats.%s.svc:4222" (ternary "nats" "tls" .Values.security.insecure) .Release.Name .Release.Namespace -}}
{{- else -}}
{{- required "natsUrl is required when nats.enabled is false" .Values.natsUrl -}}
{{- end -}}
{{- end -}}

{{/* env of a VGW container: (dict "ctx" $ "service" "config" "port" 9101 "extra" .Values.config.env
"identity" "config"). The identity's files are keys "<identity>.<file>" of the mounted Secret; it may
name $(VGW_NODE_ID), which Kubernetes expands from the container's earlier env. */}}
{{- define "vgw.env" -}}
- name: VGW_NATS_URL
  value: {{ include "vgw.natsUrl" .ctx | quote }}
{{- $cluster := .ctx.Values.nats.config.cluster | default dict }}
{{- if and .ctx.Values.nats.enabled $cluster.enabled }}
# JetStream replicas of every KV bucket and the event stream: one per NATS server of the cluster
- name: VGW_JS_REPLICAS
  value: {{ $cluster.replicas | default 3 | quote }}
{{- end }}
{{- if .ctx.Values.security.insecure }}
# INSECURE (security.insecure): the process accepts a NATS without authentication and says so loudly.
- name: VGW_NATS_INSECURE
  value: "true"
{{- else }}
- name: VGW_NATS_TLS_CA
  value: /etc/vgw/security/ca.crt
- name: VGW_NATS_TLS_CERT
  value: {{ printf "/etc/vgw/security/%s.tls.crt" .identity | quote }}
- name: VGW_NATS_TLS_KEY
  value: {{ printf "/etc/vgw/security/%s.tls.key" .identity | quote }}
- name: VGW_NATS_NKEY_SEED
  value: {{ printf "/etc/vgw/security/%s.nkey.seed" .identity | quote }}
- name: VGW_NATS_INBOX_PREFIX
  value: {{ printf "_INBOX_%s" .identity | quote }}
{{- end }}
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

{{/* Secure by default: refuse to render a form in which NATS or the config API would accept anyone,
unless security.insecure says so explicitly. */}}
{{- define "vgw.checkSecurity" -}}
{{- $s := .Values.security -}}
{{- $n := .Values.nats -}}
{{- if $s.insecure -}}
{{- if and $n.enabled $n.config.nats.tls.enabled -}}
{{- fail "security.insecure=true needs NATS without TLS and authorization as well: use -f deploy/helm/vgw/values-insecure.yaml" -}}
{{- end -}}
{{- else -}}
{{- if not $s.existingSecret -}}
{{- fail "security.existingSecret is required (deploy/helm/vgw-secrets.sh makes it from `vgwctl security init`, docs/deploy.md#helm); security.insecure=true runs WITHOUT authentication, for local experiments only" -}}
{{- end -}}
{{- if $n.enabled -}}
{{- $tls := $n.config.nats.tls -}}
{{- if not (and $tls.enabled $tls.secretName $tls.merge.verify $n.tlsCA.enabled $n.tlsCA.secretName) -}}
{{- fail "NATS must run with TLS and verified client certificates: nats.config.nats.tls (enabled, secretName, merge.verify) and nats.tlsCA" -}}
{{- end -}}
{{- if not (hasSuffix "/authorization.conf" (index $n.config.merge "00$include" | default "")) -}}
{{- fail "NATS must include the generated authorization.conf (nats.config.merge.00$include)" -}}
{{- end -}}
{{- else -}}
{{- range (splitList "," .Values.natsUrl) -}}
{{- if and . (not (hasPrefix "tls://" .)) -}}
{{- fail (printf "natsUrl %s: the VGW identities need TLS (tls://), or security.insecure=true" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the control-plane identities, only the files of one identity (and the CA):
(dict "ctx" $ "identity" "config" "extra" (list "config-api.crt")) */}}
{{- define "vgw.securityVolume" -}}
{{- if not .ctx.Values.security.insecure }}
- name: security
  secret:
    secretName: {{ .ctx.Values.security.existingSecret }}
    # read by the container's uid through the pod's fsGroup
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
      {{- range $f := list "tls.crt" "tls.key" "nkey.seed" }}
      - {key: {{ printf "%s.%s" $.identity $f }}, path: {{ printf "%s.%s" $.identity $f }}}
      {{- end }}
      {{- range .extra }}
      - {key: {{ . }}, path: {{ . }}}
      {{- end }}
{{- end }}
{{- end -}}

{{- define "vgw.securityMount" -}}
{{- if not .Values.security.insecure }}
- name: security
  mountPath: /etc/vgw/security
  readOnly: true
{{- end }}
{{- end -}}
