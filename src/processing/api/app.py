"""The admin HTTP API (FastAPI). For now: liveness and readiness."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def create_app(is_ready: Callable[[], bool]) -> FastAPI:
    app = FastAPI(title="Export service admin API", version="0.1.0")

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready(response: Response) -> dict[str, str]:
        if is_ready():
            return {"status": "ready"}
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "starting"}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format: callbacks and downloads by outcome."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
