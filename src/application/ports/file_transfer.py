"""Copies one file from a URL into the object store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from src.domain.upload_checkpoint import UploadCheckpoint

# Persists how far a big file got (and renews the work's lease); raises LeaseLost when the
# work is no longer ours, which stops the copy without throwing away what is stored.
OnCheckpoint = Callable[[UploadCheckpoint], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TransferResult:
    key: str
    bytes: int
    sha256: str
    attempts: int = 1


class TransferFailed(Exception):
    """The file could not be copied. `reason` is safe to log and store: it never holds
    the URL's query string."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = False,
        attempts: int = 1,
        url_refused: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.attempts = attempts
        # The source refused the URL itself (HTTP 403): a presigned URL that expired or
        # was revoked. A fresh URL from the Export API may well work.
        self.url_refused = url_refused


class FileTransfer(Protocol):
    """Streams a URL into the object store with bounded memory, byte for byte as served,
    computing size and sha256 on the way, and refuses a result that does not match what
    was expected. A big file reports `on_checkpoint` after each stored stretch; given
    `resume`, it continues from there when the source still serves the same content
    (else it starts over and discards the stale upload). One attempt's deadline covers
    the whole copy, upload included."""

    async def transfer(
        self,
        url: str,
        key: str,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        resume: UploadCheckpoint | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> TransferResult: ...
