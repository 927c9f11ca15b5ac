#!/usr/bin/env bash
# Build every VGW container image with podman, from nothing but Debian's mirror and PyPI:
#
#   1. localhost/debian-base:bookworm   debootstrap --variant=minbase bookworm + podman import
#   2. localhost/vgw-python:3.11-bookworm  Debian's python3 + venv on that base (deploy/docker/base/python.Dockerfile)
#   3. localhost/vgw-nats:bookworm      Debian's nats-server (deploy/docker/base/nats.Dockerfile)
#   4. localhost/vgw:$VGW_VERSION       the control-plane services and vgwctl (deploy/docker/vgw.Dockerfile)
#   5. localhost/vgw-node:$VGW_VERSION  vgw-fwd + vgw-shim + vgw-routectl (deploy/docker/node.Dockerfile)
#
# Idempotent: an image that exists is reused (the base), and podman's layer cache makes an unchanged
# build a no-op. `make images` runs this; `make test-deploy` too. Hosts that can pull the official
# images can skip 1-3: set VGW_PYTHON_IMAGE=python:3.11-slim-bookworm VGW_DEBIAN_IMAGE=debian:bookworm-slim.
#
# Settings (environment):
#   VGW_VERSION        tag of the vgw and vgw-node images                   (default dev)
#   VGW_BASE_IMAGE     the debootstrap base image                           (default localhost/debian-base:bookworm)
#   VGW_DEBIAN_IMAGE   DEBIAN_IMAGE of the Dockerfiles                      (default VGW_BASE_IMAGE)
#   VGW_PYTHON_IMAGE   PYTHON_IMAGE of the Dockerfiles                      (default localhost/vgw-python:3.11-bookworm, built here)
#   VGW_NATS_IMAGE     the NATS image's tag                                 (default localhost/vgw-nats:bookworm)
#   DEBIAN_MIRROR      debootstrap's mirror                                 (default http://deb.debian.org/debian)
#   CONTAINERS_CONF    podman's configuration                               (default deploy/docker/containers.conf)
#
# pip inside the builds uses this host's pip settings (`pip config list` and PIP_* variables): the
# index URLs and the CA bundle are handed to the build as BuildKit/buildah secrets (never stored in a
# layer). Local paths (file:// indexes, find-links directories, constraint files) are left out: a
# build cannot see them.
set -euo pipefail

if [[ $# -gt 0 ]]; then
    printf 'usage: %s   (no arguments; settings come from the environment, see the header)\n' "$0" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

VGW_VERSION=${VGW_VERSION:-dev}
BASE_IMAGE=${VGW_BASE_IMAGE:-localhost/debian-base:bookworm}
DEBIAN_IMAGE=${VGW_DEBIAN_IMAGE:-$BASE_IMAGE}
PYTHON_IMAGE=${VGW_PYTHON_IMAGE:-localhost/vgw-python:3.11-bookworm}
NATS_IMAGE=${VGW_NATS_IMAGE:-localhost/vgw-nats:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/docker/containers.conf}

START=$SECONDS
say() { printf '[build-images %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

for tool in podman debootstrap; do
    command -v "$tool" > /dev/null || die "$tool is not installed (apt-get install podman runc debootstrap; \`make test-deploy\` does it)"
done

WORK=$(mktemp -d /tmp/vgw-build-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# --- 1. the base image --------------------------------------------------------------------------------
if [[ $DEBIAN_IMAGE != "$BASE_IMAGE" ]]; then
    say "base: DEBIAN_IMAGE=$DEBIAN_IMAGE given, no debootstrap"
elif podman image exists "$BASE_IMAGE"; then
    say "base: $BASE_IMAGE present, reused"
else
    say "base: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    tar -C "$WORK/rootfs" -c . | podman import - "$BASE_IMAGE" > /dev/null
    rm -rf "$WORK/rootfs"
    say "base: $BASE_IMAGE imported"
fi

# --- pip settings for the builds ----------------------------------------------------------------------
# The merged view pip itself uses: `pip config list` (files) overridden by PIP_* variables, reduced to
# what a build can use. The CA bundle travels as a second secret.
PIP_CONF=$WORK/pip.conf
PIP_CA=$(
    python3 - "$PIP_CONF" <<'PY'
import os, re, subprocess, sys

out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
rank = {"global": 0, "install": 1, "download": 1}
values: dict[str, tuple[int, str]] = {}
for line in out.splitlines():
    m = re.match(r"^(:env:|[\w-]+)\.([\w-]+)='(.*)'$", line)
    if not m:
        continue
    section, key, value = m.groups()
    r = 9 if section == ":env:" else rank.get(section, -1)
    if r >= 0 and r >= values.get(key, (-1, ""))[0]:
        values[key] = (r, value)
for var, value in os.environ.items():  # what `pip config list` may not show
    if var.startswith("PIP_"):
        values[var[4:].lower().replace("_", "-")] = (10, value)

def remote(urls: str) -> str:
    kept = [u for u in urls.split() if not u.startswith(("file:", "/", "."))]
    dropped = [u for u in urls.split() if u not in kept]
    if dropped:
        print(f"[build-images] pip: left out (local to this host): {' '.join(dropped)}", file=sys.stderr)
    return " ".join(kept)

lines = ["[global]"]
for key in ("index-url", "extra-index-url", "trusted-host", "default-timeout", "retries"):
    if key in values:
        value = remote(values[key][1]) if key.endswith("url") else values[key][1]
        if value:
            lines.append(f"{key} = {value}")
cert = values.get("cert", (0, ""))[1]
if cert and os.path.isfile(cert):
    lines.append("cert = /run/secrets/pip-ca")
    print(cert)
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
PY
)
SECRETS=(--secret "id=pip.conf,src=$PIP_CONF")
if [[ -n $PIP_CA ]]; then
    SECRETS+=(--secret "id=pip-ca,src=$PIP_CA")
fi
say "pip: $(grep -v '^\[' "$PIP_CONF" | tr '\n' ' ')${PIP_CA:+(CA bundle $PIP_CA)}"

# --- 2-5. the images ----------------------------------------------------------------------------------
build() {  # build TAG DOCKERFILE CONTEXT [podman build args...]
    local tag=$1 file=$2 context=$3 t0=$SECONDS
    shift 3
    say "build: $tag ($file)"
    local ignore=()
    if [[ -f $file.dockerignore ]]; then
        ignore=(--ignorefile "$file.dockerignore")
    fi
    podman build --layers --file "$file" "${ignore[@]}" --tag "$tag" "$@" "$context" > "$WORK/build.log" 2>&1 \
        || { tail -40 "$WORK/build.log" >&2; die "podman build of $tag failed"; }
    say "build: $tag done in $((SECONDS - t0))s ($(podman image inspect --format '{{.Id}}' "$tag" | cut -c1-12))"
}

if [[ $PYTHON_IMAGE == localhost/vgw-python:* ]]; then
    build "$PYTHON_IMAGE" deploy/docker/base/python.Dockerfile deploy/docker/base --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE"
else
    say "python: PYTHON_IMAGE=$PYTHON_IMAGE given, not built here"
fi
build "$NATS_IMAGE" deploy/docker/base/nats.Dockerfile deploy/docker/base --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE"
build "localhost/vgw:$VGW_VERSION" deploy/docker/vgw.Dockerfile . --target vgw \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" "${SECRETS[@]}"
build "localhost/vgw-node:$VGW_VERSION" deploy/docker/node.Dockerfile . \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" "${SECRETS[@]}"
say "all images built: $BASE_IMAGE $PYTHON_IMAGE $NATS_IMAGE localhost/vgw:$VGW_VERSION localhost/vgw-node:$VGW_VERSION"
