# Kaireon compliance plane: gRPC on 50051, REST adapter on 8080.
#
#   docker build -t kaireon-compliance-plane \
#     --build-arg GIT_SHA="$(git rev-parse HEAD)" \
#     --build-arg GIT_REPO=https://github.com/<owner>/<repo> \
#     --build-arg IMAGE_NAME=<registry>/<repo>:<tag> \
#     --build-arg BUILD_STARTED_ON="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     --build-arg SBOM_DIGEST_SHA256="$(python tools/generate_sbom.py --output sbom.json)" .
#
# Every Python package comes from uv.lock with its hash checked; the base image
# is pinned by digest (multi-arch index of python:3.11.14-slim-bookworm).
# docs/RELEASE.md describes the build args and how releases are signed.

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# uv, the same version as tools/dev/setup.sh, checked against its PyPI wheel
# hashes (manylinux x86_64 and aarch64).
RUN printf '%s\n' 'uv==0.13.9 \
      --hash=sha256:d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19 \
      --hash=sha256:5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe' \
      > /tmp/uv-requirements.txt \
 && pip install --no-cache-dir --no-deps --require-hashes -r /tmp/uv-requirements.txt \
 && rm /tmp/uv-requirements.txt

WORKDIR /src

# Third-party dependencies first, in their own layer, kept until uv.lock changes.
# --locked fails the build if uv.lock does not match pyproject.toml.
COPY pyproject.toml uv.lock README.md ./
COPY clients/python/pyproject.toml clients/python/pyproject.toml
# The dev-only workspace members (test kit, perf harness): uv reads their manifests to
# check the lock; nothing of theirs is installed.
COPY tests/testkit/pyproject.toml tests/testkit/pyproject.toml
COPY perf/pyproject.toml perf/pyproject.toml
RUN uv sync --locked --no-dev --no-editable --no-install-project --no-install-workspace

# Then the two workspace packages, installed as regular (non-editable) wheels.
COPY server ./server
COPY clients/python ./clients/python
RUN uv sync --locked --no-dev --no-editable \
 && /opt/venv/bin/python -c "import kaireon_server, kaireon_client, kaireon"


FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime

# A fixed uid/gid so volume ownership is predictable across rebuilds. The
# embedded PostgreSQL (used when DATABASE_URL is unset) refuses to run as root
# and keeps its files under KAIREON_DATA_DIR.
RUN groupadd --system --gid 10001 kaireon \
 && useradd --system --uid 10001 --gid kaireon --no-create-home \
      --home-dir /var/lib/kaireon --shell /usr/sbin/nologin kaireon \
 && install -d -o kaireon -g kaireon -m 0750 /var/lib/kaireon

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KAIREON_GRPC_PORT=50051 \
    KAIREON_HTTP_PORT=8080 \
    KAIREON_DATA_DIR=/var/lib/kaireon

# Build identity, read by the provenance bundle (buildIdentity). Declared last
# so a new commit does not invalidate the dependency layers. Unset args become
# empty variables, which the server treats as unset.
ARG GIT_SHA=""
ARG GIT_REPO=""
ARG GIT_REF=""
ARG IMAGE_NAME=""
ARG BUILD_STARTED_ON=""
ARG SBOM_DIGEST_SHA256=""
ARG BUILDER_ID=""
ARG BUILDER_VERSION=""
ARG GITHUB_RUN_ID=""
ENV GIT_SHA=${GIT_SHA} \
    GIT_REPO=${GIT_REPO} \
    GIT_REF=${GIT_REF} \
    IMAGE_NAME=${IMAGE_NAME} \
    BUILD_STARTED_ON=${BUILD_STARTED_ON} \
    SBOM_DIGEST_SHA256=${SBOM_DIGEST_SHA256} \
    BUILDER_ID=${BUILDER_ID} \
    BUILDER_VERSION=${BUILDER_VERSION} \
    GITHUB_RUN_ID=${GITHUB_RUN_ID}
LABEL org.opencontainers.image.title="kaireon-compliance-plane" \
      org.opencontainers.image.description="Kaireon compliance plane: DSAR, erasure, provenance, flows over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${GIT_REPO}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.created="${BUILD_STARTED_ON}"

USER 10001:10001
WORKDIR /var/lib/kaireon
EXPOSE 50051 8080

# The embedded PostgreSQL needs time on first start (initdb), hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["kaireon-healthcheck"]

ENTRYPOINT ["kaireon-server"]
