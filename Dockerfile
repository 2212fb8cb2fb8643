# syntax=docker/dockerfile:1
# layer-sharing-exporter: a DaemonSet image that reads the node's containerd socket.
#
# Build:  docker build -t layer-sharing-exporter:0.1.0 .
# The runtime stage holds the virtualenv and nothing else: no source tree, no
# compilers, no pip cache. Dependencies install from requirements.lock with
# hashes (regenerate with `make lock`).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY exporter ./exporter
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
 && /opt/venv/bin/layer-sharing-exporter --version

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="layer-sharing-exporter" \
      org.opencontainers.image.description="Shared versus unique container image layer bytes per Kubernetes node" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Root (uid 0) only because the CRI socket is root:root 0660 on most nodes; the
# chart drops every capability, forbids privilege escalation and mounts the
# root filesystem read-only. Override with --user where the socket's group allows.
USER 0:0
EXPOSE 9877
ENTRYPOINT ["/opt/venv/bin/layer-sharing-exporter"]
CMD ["serve"]
