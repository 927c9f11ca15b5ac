# syntax=docker/dockerfile:1.7
# VGW node image: the DPDK forwarder vgw-fwd, its shim (vgw-shim) and route control (vgw-routectl with
# ExaBGP) -- the three processes of one VGW node. Build from the repository root:
#
#   docker build -f deploy/docker/node.Dockerfile -t vgw-node:dev .
#
# vgw-fwd is compiled in a builder stage against Debian's DPDK development packages; the final stage
# carries only DPDK's runtime libraries (Debian `dpdk` and the librte-* poll-mode drivers), never -dev.
#
# Users: vgw-fwd runs as root *inside* the container, with every capability dropped except
# NET_ADMIN, NET_RAW and IPC_LOCK (compose and Helm set that), because DPDK needs hugepage files and
# raw sockets / device access. vgw-shim talks to the forwarder's control socket (mode 0600, owned by
# the forwarder's user), so it runs as the same uid with no capabilities at all. vgw-routectl needs
# neither and runs as the unprivileged user `vgw` (its ExaBGP only connects out to port 179).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- build the forwarder --------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS fwd-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian stable moves only by security updates: packages are not pinned to versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config libdpdk-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY dataplane/Makefile dataplane/
COPY dataplane/core/ dataplane/core/
COPY dataplane/dpdk/ dataplane/dpdk/
# Only the forwarder (the `fwd` target of dataplane/Makefile); it fails loudly if libdpdk is missing.
RUN make -C dataplane fwd && test -x dataplane/build/vgw-fwd \
    && strip --strip-debug -o /vgw-fwd dataplane/build/vgw-fwd

# --- build the Python venv (shim, routectl, ExaBGP) -------------------------------------------------
FROM ${PYTHON_IMAGE} AS py-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# pip's settings for builds behind a private index or TLS proxy, never stored in a layer:
# --secret id=pip.conf,src=FILE (becomes /etc/pip.conf) and --secret id=pip-ca,src=CA.pem (FILE
# says `cert = /run/secrets/pip-ca`); scripts/build-images.sh passes the host's. Both optional.
WORKDIR /src
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-ca \
    python -m venv /opt/vgw && /opt/vgw/bin/pip install --upgrade pip setuptools wheel \
    && python -m venv /opt/protoc && /opt/protoc/bin/pip install "grpcio-tools>=1.70,<2"
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY vgw/ vgw/
COPY services/ services/
COPY dataplane/__init__.py dataplane/
COPY dataplane/shim/ dataplane/shim/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-ca \
    find proto -name '*.proto' -print0 | xargs -0 -r /opt/protoc/bin/python -m grpc_tools.protoc -Iproto \
        --python_out=. --pyi_out=. \
    && /opt/vgw/bin/pip install . \
    && /opt/vgw/bin/python -c "import vgw, dataplane.shim, services.routectl" \
    && test -x /opt/vgw/bin/exabgp

# --- runtime ------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS node
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="vgw-node" \
      org.opencontainers.image.description="VGW node: DPDK forwarder vgw-fwd, vgw-shim and vgw-routectl (ExaBGP)" \
      org.opencontainers.image.licenses="Apache-2.0"
# DPDK runtime only: the EAL/ethdev/mbuf/... libraries vgw-fwd links, the poll-mode drivers it can
# load (PCI NICs and the af_packet/af_xdp/tap/pcap/ring/null vdevs), and `dpdk` for
# dpdk-devbind.py / dpdk-hugepages.py. No compiler, no headers.
# Debian stable moves only by security updates: packages are not pinned to versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        dpdk \
        librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-mempool-ring23 librte-ring23 \
        librte-net23 librte-kvargs23 librte-meter23 librte-telemetry23 \
        librte-net-af-packet23 librte-net-af-xdp23 librte-net-tap23 librte-net-pcap23 librte-net-ring23 \
        librte-net-null23 librte-net-virtio23 librte-net-vmxnet3-23 librte-net-ixgbe23 librte-net-i40e23 \
        librte-net-ice23 librte-net-mlx5-23 librte-net-bnxt23 librte-net-ena23 \
        iproute2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 vgw \
    && useradd --system --uid 10001 --gid vgw --home-dir /var/lib/vgw --create-home --shell /usr/sbin/nologin vgw \
    && install -d -m 0755 /run/vgw
COPY --from=fwd-build /vgw-fwd /usr/local/bin/vgw-fwd
COPY --from=py-build /opt/vgw /opt/vgw
# Fails the build if a library vgw-fwd needs is missing from the runtime stage.
RUN ! ldd /usr/local/bin/vgw-fwd | grep 'not found'
ENV PATH=/opt/vgw/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VGW_FWD_SOCKET=/run/vgw/fwd.sock
WORKDIR /var/lib/vgw
# The forwarder has no HTTP endpoint; the shim's /readyz includes "forwarder control socket
# connected". This check runs in whichever of the three containers uses the image: the forwarder's
# control socket exists, or the process's /healthz answers (shim, routectl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u;a=os.environ.get('VGW_METRICS_ADDR');s=os.environ.get('VGW_FWD_SOCKET','/run/vgw/fwd.sock');sys.exit(0 if os.path.exists(s) else 1) if not a else None;h,_,p=a.rpartition(':');h=h.strip('[]');h='127.0.0.1' if h in ('','0.0.0.0','::') else h;u.urlopen(f'http://{h}:{p}/healthz',timeout=2).read()"]
STOPSIGNAL SIGTERM
ENTRYPOINT []
CMD ["vgw-fwd", "--help"]
