"""AiohttpExportApi: GET {base}/exports/{exportId}, validated, with bounded retries."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import aiohttp
import structlog
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from src.application.ports.export_api import (
    ExportApiError,
    ExportApiRejected,
    ExportApiUnavailable,
    ExportFile,
    ExportState,
    ExportStatus,
    MalformedExportResponse,
)
from src.infrastructure.http.export_api_schema import ExportResponse
from src.observability.metrics import EXPORT_API

log = structlog.get_logger(__name__)


def _describe(err: ValidationError) -> str:
    """Where and what, never the offending values (they may hold presigned URLs)."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:5]
    ]
    return "; ".join(problems)


class AiohttpExportApi:  # implements ExportApi
    """Network errors, timeouts, 5xx and malformed bodies are retried with exponential
    backoff and jitter; other 4xx are not."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float = 0.5,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._attempts = max_retries + 1
        self._backoff = backoff_seconds

    async def get_export(self, export_id: str) -> ExportStatus:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(
                multiplier=self._backoff, max=10 * self._backoff, jitter=self._backoff
            ),
            retry=retry_if_exception(lambda e: isinstance(e, ExportApiError) and e.retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._get_once(export_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(self, export_id: str) -> ExportStatus:
        try:
            found = await self._request(export_id)
        except ExportApiUnavailable:
            EXPORT_API.labels("unavailable").inc()
            raise
        except MalformedExportResponse:
            EXPORT_API.labels("malformed").inc()
            raise
        except ExportApiRejected:
            EXPORT_API.labels("rejected").inc()
            raise
        EXPORT_API.labels("ok").inc()
        return found

    async def _request(self, export_id: str) -> ExportStatus:
        url = f"{self._base}/exports/{quote(export_id, safe='')}"
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise ExportApiUnavailable("timed out") from None
        except aiohttp.ClientError as err:
            raise ExportApiUnavailable(f"connection failed ({type(err).__name__})") from None
        if status >= 500 or status in (408, 429):
            raise ExportApiUnavailable(f"HTTP {status}")
        if status >= 400:
            raise ExportApiRejected(f"HTTP {status}")
        return self._parse(export_id, body)

    @staticmethod
    def _parse(export_id: str, body: bytes) -> ExportStatus:
        try:
            parsed = ExportResponse.model_validate_json(body)
        except ValidationError as err:
            reason = _describe(err)
            log.warning("malformed Export API response", reason=reason)
            raise MalformedExportResponse(f"malformed response: {reason}") from None
        files = tuple(
            ExportFile(
                url=d.url,
                file_name=d.fileName,
                size=d.fileSize,
                sha256=d.checksum,
                expires_at=_utc(d.expiresAt),
            )
            for d in parsed.downloadUrls or []
        )
        message = parsed.error.message if parsed.error else None
        return ExportStatus(export_id, ExportState(parsed.status), files, message)


def _utc(moment: datetime | None) -> datetime | None:
    """A timestamp without a zone is read as UTC, as the Export API writes them."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
