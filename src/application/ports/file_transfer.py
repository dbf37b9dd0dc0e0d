"""Copies one file from a URL into the object store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TransferResult:
    key: str
    bytes: int
    sha256: str
    attempts: int = 1


class TransferFailed(Exception):
    """The file could not be copied. `reason` is safe to log and store: it never holds
    the URL's query string."""

    def __init__(self, reason: str, *, retryable: bool = False, attempts: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.attempts = attempts


class FileTransfer(Protocol):
    """Streams a URL into the object store with bounded memory, computing size and
    sha256 on the way, and refuses a result that does not match what was expected."""

    async def transfer(
        self,
        url: str,
        key: str,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult: ...
