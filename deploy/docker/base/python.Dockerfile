# syntax=docker/dockerfile:1.7
# A Python 3.11 image from a plain Debian bookworm base, for hosts that cannot pull the official
# python:3.11-slim-bookworm (scripts/build-images.sh builds it on top of a debootstrap base and passes
# it to the VGW Dockerfiles as PYTHON_IMAGE). It offers what those Dockerfiles use from the official
# image: `python` on PATH, `python -m venv` with pip, and the CA bundle.
#
#   docker build -f deploy/docker/base/python.Dockerfile --build-arg DEBIAN_IMAGE=localhost/debian-base:bookworm \
#       -t localhost/vgw-python:3.11-bookworm deploy/docker/base

ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian stable moves only by security updates: packages are not pinned to versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && python -m venv --help > /dev/null
ENV LANG=C.UTF-8
CMD ["python3"]
