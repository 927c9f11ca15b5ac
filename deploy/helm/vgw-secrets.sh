#!/usr/bin/env bash
# The Kubernetes Secrets of the VGW chart, from the output of `vgwctl security init DIR`:
#
#   deploy/helm/vgw-secrets.sh DIR -n vgw                           # create them
#   deploy/helm/vgw-secrets.sh DIR -n vgw --dry-run=client -o yaml  # or print them (GitOps)
#
# Every argument after DIR goes to each `kubectl create secret generic`. The Secrets (keys are flat:
# a Secret volume has no directories):
#   $SECRET (vgw-security)          ca.crt, config-api.crt, config-api.key, tokens.json and
#                                   <id>.tls.crt, <id>.tls.key, <id>.nkey.seed of config, healthcheck, monitor
#   $SECRET-nodes                   ca.crt and the same three of every routectl-<node> and shim-<node>
#   $NATS_SECRET (vgw-nats-server)  tls.crt, tls.key (the NATS server's), ca.crt, authorization.conf
# The CA's private key and the operator, admin and subscriber identities stay out of the cluster.
# Rotation: re-run `vgwctl security init` (docs/security.md), then this with `--dry-run=client -o yaml |
# kubectl apply -f -`, and restart the workloads.
set -euo pipefail

dir=${1:?usage: vgw-secrets.sh DIR [kubectl args...]}
shift
KUBECTL=${KUBECTL:-kubectl}
SECRET=${SECRET:-vgw-security}
NATS_SECRET=${NATS_SECRET:-vgw-nats-server}

# Several manifests on stdout need separators.
printing=false
for a in "$@"; do
    case $a in -o | -o* | --output | --output=*) printing=true ;; esac
done

create() {
    local name=$1
    shift
    if $printing; then echo "---"; fi
    "$KUBECTL" create secret generic "$name" "$@"
}

identity() { # the --from-file arguments of one identity
    local id=$1 f
    for f in tls.crt tls.key nkey.seed; do
        printf '%s\n' "--from-file=$id.$f=$dir/identities/$id/$f"
    done
}

[[ -f $dir/ca/ca.crt && -d $dir/identities ]] || {
    echo "vgw-secrets.sh: $dir is not the output of vgwctl security init" >&2
    exit 1
}

control=(--from-file="ca.crt=$dir/ca/ca.crt"
    --from-file="config-api.crt=$dir/config-api/server.crt"
    --from-file="config-api.key=$dir/config-api/server.key"
    --from-file="tokens.json=$dir/config-api/tokens.json")
for id in config healthcheck monitor; do
    mapfile -t -O "${#control[@]}" control < <(identity "$id")
done

nodes=(--from-file="ca.crt=$dir/ca/ca.crt")
for path in "$dir"/identities/routectl-* "$dir"/identities/shim-*; do
    [[ -d $path ]] || continue
    mapfile -t -O "${#nodes[@]}" nodes < <(identity "$(basename "$path")")
done
if ((${#nodes[@]} == 1)); then
    echo "vgw-secrets.sh: no node identities in $dir (vgwctl security init --node NAME)" >&2
    exit 1
fi

create "$SECRET" "${control[@]}" "$@"
create "$SECRET-nodes" "${nodes[@]}" "$@"
create "$NATS_SECRET" --from-file="tls.crt=$dir/nats/server.crt" --from-file="tls.key=$dir/nats/server.key" \
    --from-file="ca.crt=$dir/ca/ca.crt" --from-file="authorization.conf=$dir/nats/authorization.conf" "$@"
