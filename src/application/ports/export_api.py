"""The external Export API, as the use cases need it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class ExportState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ExportFile:
    url: str
    file_name: str
    size: int | None = None
    sha256: str | None = None
    expires_at: datetime | None = None  # the URL's own expiry, when the API says it


@dataclass(frozen=True, slots=True)
class ExportStatus:
    export_id: str
    state: ExportState
    files: tuple[ExportFile, ...] = field(default_factory=tuple)
    error_message: str | None = None


class ExportApiError(Exception):
    """The Export API could not give an answer we can use."""

    retryable: bool = True


class ExportApiUnavailable(ExportApiError):
    """Network error, timeout or 5xx, still failing after the adapter's retries."""


class ExportApiRejected(ExportApiError):
    """A 4xx answer: asking again will not help."""

    retryable = False


class MalformedExportResponse(ExportApiError):
    """The body did not match the contract; the message says what was wrong."""


class ExportApi(Protocol):
    """Reads an export's status. Retries transient failures itself; raises an
    ExportApiError subclass when it has no usable answer."""

    async def get_export(self, export_id: str) -> ExportStatus: ...
