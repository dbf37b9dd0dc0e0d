# Production image: the service only (no emulator, no dev tools).
# The base image is pinned by tag and by the digest of its multi-architecture index
# (amd64, arm64), the same in every FROM of both Dockerfiles; uv by the Makefile's
# UV_VERSION. tests/containers checks both; bump them together.
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first (their layer survives source changes), then the project.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY src ./src
RUN uv sync --frozen --no-default-groups
# Read at run time: the state machine definitions and the template's table definitions
# (`export-service migrate`).
COPY state-machines ./state-machines
COPY infra ./infra

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
# A numeric user, so that runAsNonRoot-style checks can verify it without /etc/passwd;
# the code stays owned by root (read-only to the service).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /app /app
# The admin port is published: listen on every interface (the API requires a key).
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PORT=3000 ADMIN_HOST=0.0.0.0
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/health/live', timeout=2)"]
# SIGTERM drains: stop receiving, finish or hand back in-flight work within
# SHUTDOWN_GRACE_SECONDS, exit 0. Give the orchestrator's stop timeout the grace plus
# its hand-back margin (see the README's "Containers and docker compose").
STOPSIGNAL SIGTERM
CMD ["export-service", "serve"]
