# syntax=docker/dockerfile:1.7
# NATS from Debian's nats-server package, for hosts that cannot pull the official nats image (the
# compose stack's default, VGW_NATS_IMAGE=nats:2.10-alpine). Same interface as the official image for
# what compose uses: `command` is nats-server's arguments (`-c /etc/nats/nats.conf`), and `wget` for
# the healthcheck. scripts/build-images.sh builds it as localhost/vgw-nats:bookworm.
#
#   docker build -f deploy/docker/base/nats.Dockerfile -t localhost/vgw-nats:bookworm deploy/docker/base
#
# Runs as root, as the official image does: it reads the security dir's nats/ files, which
# `vgwctl security init` leaves owned by the operator (docs/deploy.md).

ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="vgw-nats" \
      org.opencontainers.image.description="NATS server (Debian nats-server) for the VGW compose stack" \
      org.opencontainers.image.licenses="Apache-2.0"
# Debian stable moves only by security updates: packages are not pinned to versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server wget \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -m 0750 /data
EXPOSE 4222 6222 8222
STOPSIGNAL SIGTERM
ENTRYPOINT ["nats-server"]
CMD ["-js", "-sd", "/data", "-m", "8222"]
