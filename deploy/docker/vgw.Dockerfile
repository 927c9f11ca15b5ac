# syntax=docker/dockerfile:1.7
# VGW control-plane image: vgw-config, vgw-healthcheck, vgw-monitor, vgw-routectl (+ ExaBGP), vgw-shim
# and vgwctl, all from one Python venv. Build from the repository root:
#
#   docker build -f deploy/docker/vgw.Dockerfile -t vgw:dev .                    # any service (set command)
#   docker build -f deploy/docker/vgw.Dockerfile --target healthcheck -t vgw-healthcheck:dev .
#
# Per-service targets only differ in their CMD; the runtime image is the same. Everything runs as the
# unprivileged user `vgw` (uid 10001). The HEALTHCHECK asks the service's own /healthz on the port
# of VGW_METRICS_ADDR (set it in the container, e.g. 0.0.0.0:9102).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a self-contained venv in /opt/vgw with the generated gRPC code -------------------------
FROM ${PYTHON_IMAGE} AS build
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
# Generated protobuf/gRPC modules are not in git (scripts/setup.sh makes them the same way).
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf --mount=type=secret,id=pip-ca \
    find proto -name '*.proto' -print0 | xargs -0 -r /opt/protoc/bin/python -m grpc_tools.protoc -Iproto \
        --python_out=. --pyi_out=. \
    && /opt/vgw/bin/pip install . \
    && /opt/vgw/bin/python -c "import vgw, services, dataplane.shim"

# --- runtime ------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="vgw" \
      org.opencontainers.image.description="VGW control-plane services (config, healthcheck, monitor, routectl, shim) and vgwctl" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 vgw \
    && useradd --system --uid 10001 --gid vgw --home-dir /var/lib/vgw --create-home --shell /usr/sbin/nologin vgw \
    && install -d -o vgw -g vgw -m 0750 /run/vgw
COPY --from=build /opt/vgw /opt/vgw
ENV PATH=/opt/vgw/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VGW_METRICS_ADDR=0.0.0.0:9100
USER 10001:10001
WORKDIR /var/lib/vgw
# /healthz of whatever service runs here, on the port of VGW_METRICS_ADDR (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u;h,_,p=os.environ.get('VGW_METRICS_ADDR','127.0.0.1:9100').rpartition(':');h=h.strip('[]');h='127.0.0.1' if h in ('','0.0.0.0','::') else h;u.urlopen(f'http://{h}:{p}/healthz',timeout=2).read()"]
STOPSIGNAL SIGTERM
CMD ["vgwctl", "--help"]

# --- one target per service (same layers, different CMD) --------------------------------------------
FROM runtime AS config
ENV VGW_METRICS_ADDR=0.0.0.0:9101 VGW_CONFIG_ADDR=0.0.0.0:50051
EXPOSE 50051 9101
CMD ["vgw-config"]

FROM runtime AS healthcheck
ENV VGW_METRICS_ADDR=0.0.0.0:9102
EXPOSE 9102
CMD ["vgw-healthcheck"]

FROM runtime AS routectl
ENV VGW_METRICS_ADDR=0.0.0.0:9103
EXPOSE 9103
CMD ["vgw-routectl"]

FROM runtime AS monitor
ENV VGW_METRICS_ADDR=0.0.0.0:9104
EXPOSE 9104
CMD ["vgw-monitor"]

FROM runtime AS shim
ENV VGW_METRICS_ADDR=0.0.0.0:9105
EXPOSE 9105
CMD ["vgw-shim"]

# The default target (last stage): the generic image; compose and Helm set the command per service.
FROM runtime AS vgw
