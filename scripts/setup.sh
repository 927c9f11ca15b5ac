#!/usr/bin/env bash
# Idempotent setup: Debian packages, the Python venv, generated code and native builds.
# Safe to run any number of times; each step does nothing when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: installing Debian packages needs root (run as root or with sudo)" >&2
        exit 1
    fi
}

install_apt_packages() {
    local wanted missing=()
    mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/apt-packages.txt)
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "Debian packages: all ${#wanted[@]} present"
        return
    fi
    need_root
    log "Debian packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
    local py="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        log "venv: creating .venv with $($py --version)"
        "$py" -m venv .venv
    fi
    # Reinstall only when the dependency list changed since the last install.
    local stamp=.venv/.vgw-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        log "venv: installing vgw and its dependencies"
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e '.[dev]'
        touch "$stamp"
    else
        log "venv: up to date"
    fi
}

generate_proto() {
    # gRPC/protobuf Python code from proto/ into the source tree next to its package (gitignored:
    # *_pb2.py, *_pb2.pyi). Regenerated only when a .proto is newer than the last generation.
    local stamp=.venv/.vgw-proto protos
    mapfile -t protos < <(find proto -name '*.proto' | sort)
    if [ ${#protos[@]} -eq 0 ]; then
        return
    fi
    if [ -f "$stamp" ] && [ -z "$(find proto -name '*.proto' -newer "$stamp")" ] \
        && [ -f vgw/config/v1/config_pb2.py ]; then
        log "proto: up to date"
        return
    fi
    log "proto: generating Python code for ${#protos[@]} file(s)"
    .venv/bin/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. "${protos[@]}"
    touch "$stamp"
}

build_native() {
    if [ -f dataplane/Makefile ]; then
        log "dataplane: building"
        make -s -C dataplane build
    fi
}

install_apt_packages
setup_venv
generate_proto
build_native
log "done"
