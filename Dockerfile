# syntax=docker/dockerfile:1
# cml-operator image: a virtualenv with the operator and its runtime dependencies
# (pinned by constraints.txt), on a slim Python base, run as a non-root numeric user.
#
#   docker build -t ghcr.io/cml-dev/cml-operator:0.1.0 .
#   docker run --rm ghcr.io/cml-dev/cml-operator:0.1.0 --version
#   make image            # buildah, on a local Debian base (tests/image/); BASE=... to choose
#
# PYTHON_IMAGE may be any Debian-based image with python3 and its venv module: the
# official slim image (the default, for users), or the Debian bookworm base that
# tests/image/base.sh makes with debootstrap where no registry is reachable.
# The base is pinned by its exact tag. Pin it by digest too where you build
# (python:3.11.14-slim-bookworm@sha256:...): no registry is reachable from the
# environment this file was written in, so no digest could be looked up here.
# Builder and runtime use the same base, so the venv's interpreter symlink
# (/usr/local/bin/python3.11) resolves in the final stage.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# pip compiles the installed modules to bytecode here, so the read-only runtime
# image starts without compiling (and PYTHONDONTWRITEBYTECODE there writes none).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# pip 26 resolves this tree at once (older pips backtrack for minutes; see the Makefile).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install pip==26.0

COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/

# Runtime dependencies only (not the `test` extra), every version from constraints.txt;
# the build backend is pinned too. All of them ship wheels: no compiler is needed.
RUN printf 'setuptools==80.9.0\n' > /tmp/build-constraints.txt \
    && /opt/venv/bin/python -m pip install --build-constraint /tmp/build-constraints.txt \
        -c constraints.txt . \
    && /opt/venv/bin/cml-operator --version

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="cml-operator" \
      org.opencontainers.image.description="Kubernetes operator reconciling CMLWorker resources against Amazon EC2" \
      org.opencontainers.image.licenses="Apache-2.0"

# A passwd entry for the numeric user: Kopf names its peer identity after
# getpass.getuser() (when POD_ID is unset), which fails for a uid without one.
RUN groupadd --system --gid 65532 cml \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cml

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /tmp

# 8080: Prometheus /metrics (--metrics-port); 8081: Kopf's liveness /healthz (--liveness-port).
EXPOSE 8080 8081

ENTRYPOINT ["cml-operator"]
CMD ["run"]
