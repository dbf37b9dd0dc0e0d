# Production image: the service only (no emulator, no dev tools).
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY src ./src
COPY state-machines ./state-machines
RUN uv sync --frozen --no-default-groups

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY --from=build /app /app
# The admin port is published: listen on every interface (the API requires a key).
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 PORT=3000 ADMIN_HOST=0.0.0.0
USER app
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"3000\")}/health/live')"
# SIGTERM drains: stop receiving, finish or release in-flight work, exit 0.
STOPSIGNAL SIGTERM
CMD ["export-service", "serve"]
