# syntax=docker/dockerfile:1
# layer-sharing-exporter: a DaemonSet image that reads the node's CRI socket.
#
# Build:  docker build -t ghcr.io/layer-sharing-exporter/layer-sharing-exporter:0.1.0 .
# (tests/harness/image_build.py builds it with podman from bases made from Debian
# packages; docs/image.md says how and what it measures.)
#
# Two bases, both Debian 12 and both made of Debian packages only, so either can be
# rebuilt from the Debian archive (mmdebstrap) where no registry can be reached:
# - build: debian slim plus Debian's python3.11, where the virtualenv is made;
# - runtime: distroless python3 (Debian's python3.11 and the libraries it links, no
#   shell, no package manager). The same Python as the build stage, so the
#   virtualenv runs unchanged, and nothing to patch but the interpreter and libc.
# The runtime stage only copies; it runs nothing, so no layer hides another's bytes.

ARG BUILD_IMAGE=docker.io/library/debian:bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:latest

FROM ${BUILD_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# python3.11 by its full name: the virtualenv's interpreter links to /usr/bin/python3.11,
# which the runtime base has under that name.
RUN python3.11 -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps --no-compile -r requirements.lock
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY exporter ./exporter
# Then what the runtime needs none of: pip and setuptools; the kubernetes client's
# asyncio API (43 MB, never imported) and the aiohttp stack only it uses; zstandard's
# CFFI backend (its C backend is the one imported); tests and docs. The import check
# below fails the build if the exporter ever imports any of them.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps --no-compile /wheels/*.whl \
 && /opt/venv/bin/pip uninstall -y -q pip setuptools \
 && cd /opt/venv/lib/python3.11/site-packages \
 && rm -rf kubernetes/aio aiohttp aiohttp_retry aiosignal aiohappyeyeballs frozenlist multidict propcache yarl \
      zstandard/_cffi.*.so zstandard/backend_cffi.py \
 && find . -depth -type d \( -name tests -o -name test -o -name docs \) -exec rm -rf {} + \
 && find . -name '*.pyi' -delete \
 && /opt/venv/bin/layer-sharing-exporter --version
# Bytecode only for the modules the exporter imports, compiled into the cache
# prefix the runtime reads (the root filesystem is read-only, so anything not here
# is compiled again at every start: 1.2 MiB more RSS in the pod, and slower). The
# probe imports what `serve` imports, and the kubernetes client as enrichment
# loads it. Its own files, copied with it, are not checked again (unchecked-hash);
# the standard library belongs to the runtime base, so its bytecode is checked
# against the source (checked-hash) and a different Python there costs a
# compile, never a stale module. (No PYTHONOPTIMIZE or PYTHONNODEBUGRANGES: in
# the pod neither changed RSS measurably, 0.1 MiB, docs/image.md.)
ENV PYTHONPYCACHEPREFIX=/opt/pycache
RUN /opt/venv/bin/python -c "import importlib.util, py_compile, sys; \
import exporter.cli.main, exporter.cli.serve, exporter.cli.df, exporter.outputs.server, exporter.sources.kubernetes.workloads; \
from kubernetes import client, config; client.ApiClient(); \
unused = {'aiohttp', 'kubernetes.aio', 'zstandard.backend_cffi', 'pip', 'setuptools'} & set(sys.modules); \
assert not unused, f'imported but removed from the image: {sorted(unused)}'; \
venv = '/opt/venv/'; M = py_compile.PycInvalidationMode; \
[py_compile.compile(f, importlib.util.cache_from_source(f), doraise=True, \
  invalidation_mode=M.UNCHECKED_HASH if f.startswith(venv) else M.CHECKED_HASH) \
 for f in sorted({getattr(m, '__file__', None) or '' for m in list(sys.modules.values())}) if f.endswith('.py')]"

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="layer-sharing-exporter" \
      org.opencontainers.image.description="Shared versus unique container image layer bytes per Kubernetes node" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/layer-sharing-exporter/layer-sharing-exporter"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/pycache /opt/pycache
# MALLOC_ARENA_MAX=2: glibc's arenas per thread otherwise grow RSS with the
# threads gRPC and the HTTP server start; read by glibc before any thread starts
# (it replaces the code's mallopt call, issue 23).
ENV PATH=/opt/venv/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PYTHONPYCACHEPREFIX=/opt/pycache MALLOC_ARENA_MAX=2
# Root (uid 0) only because the CRI socket is root:root 0660 on most nodes; the
# chart runs it as 65534 in group 0, drops every capability, forbids privilege
# escalation and mounts the root filesystem read-only.
USER 0:0
EXPOSE 9877
ENTRYPOINT ["/opt/venv/bin/layer-sharing-exporter"]
CMD ["serve"]
