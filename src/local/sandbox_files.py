"""The sandbox's file server: deterministic contents, byte ranges, validators, gzip and pacing.

Byte ``p`` of a file is ``content_block(export_id, index)[p % CHUNK_SIZE]`` whatever the
file's size, so any slice streams from any offset without the server holding the file.
``gzip`` plans serve the gzip of that content instead (small files only: built in memory).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from src.local.sandbox import ExportPlan

CHUNK_SIZE = 64 * 1024
MIB = 1024 * 1024
HANG_SECONDS = 60.0
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_SINGLE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)


# ---- contents ----------------------------------------------------------------------------


def content_block(export_id: str, index: int) -> bytes:
    """One 64 KiB block of a file's content; the file is this block repeated, then sliced."""
    seed = hashlib.sha256(f"{export_id}:{index}".encode()).digest()
    return seed * (CHUNK_SIZE // len(seed))


def content_chunks(export_id: str, index: int, size: int, start: int = 0) -> Iterator[bytes]:
    """Yields the file's bytes from offset ``start`` up to ``size`` in pieces of at most 64 KiB;
    never holds more than one block."""
    block = content_block(export_id, index)
    position = start
    while position < size:
        offset = position % CHUNK_SIZE
        piece = min(CHUNK_SIZE - offset, size - position)
        yield block if piece == CHUNK_SIZE else block[offset : offset + piece]
        position += piece


@functools.lru_cache(maxsize=1024)
def content_sha256(export_id: str, index: int, size: int) -> str:
    """sha256 hex of a file's content, computed by streaming (cached: big files take time)."""
    digest = hashlib.sha256()
    for chunk in content_chunks(export_id, index, size):
        digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def gzip_content(export_id: str, index: int, size: int) -> bytes:
    """The gzip of a file's content (mtime 0, so deterministic); built in memory."""
    return gzip.compress(b"".join(content_chunks(export_id, index, size)), mtime=0)


def served_size(plan: ExportPlan, index: int) -> int:
    """The length of what a full GET of the file serves."""
    if plan.gzip:
        return len(gzip_content(plan.export_id, index, plan.file_size))
    return plan.file_size


def served_chunks(plan: ExportPlan, index: int, positions: range) -> Iterator[bytes]:
    """The served bytes at ``positions`` (a contiguous slice), in pieces of at most 64 KiB."""
    if not plan.gzip:
        return content_chunks(plan.export_id, index, positions.stop, positions.start)
    body = gzip_content(plan.export_id, index, plan.file_size)
    return (
        body[offset : min(offset + CHUNK_SIZE, positions.stop)]
        for offset in range(positions.start, positions.stop, CHUNK_SIZE)
    )


def served_sha256(plan: ExportPlan, index: int) -> str:
    """sha256 hex of what a full GET of the file serves."""
    if plan.gzip:
        return hashlib.sha256(gzip_content(plan.export_id, index, plan.file_size)).hexdigest()
    return content_sha256(plan.export_id, index, plan.file_size)


# ---- presigned URL expiry ----------------------------------------------------------------


def presign_time(now: datetime) -> datetime:
    """The X-Amz-Date of a URL listed at ``now``, rounded up to the second so that the URL
    lives at least its X-Amz-Expires seconds (and less than one second more)."""
    whole = now.replace(microsecond=0)
    return whole if whole == now else whole + timedelta(seconds=1)


def expiry_query(issued: datetime, ttl_seconds: int) -> str:
    """The SigV4 query parameters that say when a presigned URL expires."""
    return (
        f"X-Amz-Date={issued.strftime(AMZ_DATE_FORMAT)}&X-Amz-Expires={ttl_seconds}"
        "&X-Amz-SignedHeaders=host"
    )


def url_expiry(query: Mapping[str, str]) -> datetime | None:
    """When a URL stops working (X-Amz-Date + X-Amz-Expires); None when it does not say."""
    try:
        issued = datetime.strptime(query["X-Amz-Date"], AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        return issued + timedelta(seconds=int(query["X-Amz-Expires"]))
    except (KeyError, ValueError):
        return None


def expired_response(expiry: datetime | None, now: datetime) -> web.Response:
    """S3's answer to an expired presigned URL."""
    expires = expiry.strftime("%Y-%m-%dT%H:%M:%SZ") if expiry else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
        f"<Expires>{expires}</Expires><ServerTime>{now.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        "</ServerTime></Error>"
    )
    return web.Response(status=403, text=body, content_type="application/xml")


# ---- one file response -------------------------------------------------------------------


def parse_range(header: str, total: int) -> range | None:
    """The positions a ``Range`` header asks for, clipped to the file: ``bytes=N-``,
    ``bytes=N-M`` or ``bytes=-N``. None when it is not one valid byte range (the header is
    then ignored, as RFC 9110 allows); an empty range when it is unsatisfiable."""
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix: the last N bytes
        return range(max(0, total - int(last)), total)
    start = int(first)
    if last and int(last) < start:
        return None
    stop = min(int(last) + 1, total) if last else total
    return range(start, max(start, stop))


@dataclass(frozen=True, slots=True)
class ServedFile:
    """One GET of one file: the plan's file ``index``, its ``attempt``-th request."""

    plan: ExportPlan
    index: int
    attempt: int
    first_seen: datetime

    def validators(self) -> dict[str, str]:
        """A strong ETag and a Last-Modified: fixed, or new on every request (``changing``)."""
        key = f"{self.plan.export_id}:{self.index}:{self.plan.file_size}"
        generation = self.attempt if self.plan.changing else 0
        if generation:
            key = f"{key}:{generation}"
        modified = self.first_seen.replace(microsecond=0) + timedelta(seconds=generation)
        return {
            "ETag": f'"{hashlib.sha256(key.encode()).hexdigest()}"',
            "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True),
        }

    def headers(self) -> dict[str, str]:
        """Headers of a 200 or 206 answer, Content-Length and Content-Range aside."""
        headers = self.validators()
        if not self.plan.no_ranges:
            headers["Accept-Ranges"] = "bytes"
        if self.plan.gzip:
            headers.update({"Content-Type": "text/csv", "Content-Encoding": "gzip"})
        else:
            headers["Content-Type"] = "application/octet-stream"
        return headers

    def wanted_range(self, request_headers: Mapping[str, str], total: int) -> range | None:
        """The slice to serve; None for the whole file (no Range, ``norange``, a Range that is
        not one byte range, or an If-Range that is neither the ETag nor the Last-Modified)."""
        header = request_headers.get("Range")
        if header is None or self.plan.no_ranges:
            return None
        if_range = request_headers.get("If-Range")
        if if_range is not None and if_range not in self.validators().values():
            return None
        return parse_range(header, total)


def unsatisfiable_response(file: ServedFile, total: int) -> web.Response:
    headers = {**file.validators(), "Accept-Ranges": "bytes", "Content-Range": f"bytes */{total}"}
    body = (
        "<Error><Code>InvalidRange</Code>"
        "<Message>The requested range is not satisfiable</Message></Error>"
    )
    return web.Response(status=416, text=body, content_type="application/xml", headers=headers)


class Pacer:
    """How long to wait before each chunk so that a body flows at ``bytes_per_second``."""

    def __init__(self, bytes_per_second: float) -> None:
        self._rate = bytes_per_second
        self._started = time.monotonic()
        self._sent = 0

    def delay(self, size: int) -> float:
        self._sent += size
        return max(0.0, self._started + self._sent / self._rate - time.monotonic())


class FileStreamer:
    """Answers a file GET with 200, 206 or 416, then sends the body as the plan says: held
    back (``filedelay``), hung (``hangfile``) or paced (``ratemb``), counting what it writes.

    ``count(*key, amount=1)`` adds to the sandbox's counters; ``stopped_within(seconds)``
    waits and says whether the server is stopping."""

    def __init__(
        self,
        count: Callable[..., int],
        stopped_within: Callable[[float], Awaitable[bool]],
    ) -> None:
        self._count = count
        self._stopped_within = stopped_within

    async def respond(self, request: web.Request, file: ServedFile) -> web.StreamResponse:
        total = served_size(file.plan, file.index)
        wanted = file.wanted_range(request.headers, total)
        if wanted is not None and not wanted:
            return unsatisfiable_response(file, total)
        response = web.StreamResponse(headers=file.headers())
        positions = range(total) if wanted is None else wanted
        if wanted is not None:
            response.set_status(206)
            response.headers["Content-Range"] = f"bytes {wanted.start}-{wanted.stop - 1}/{total}"
            self._count("ranges", file.plan.export_id)
        response.content_length = len(positions)
        await response.prepare(request)
        if request.method != "HEAD" and not await self._held_back(file):
            await self._write_body(
                response, file.plan, served_chunks(file.plan, file.index, positions)
            )
        return response

    async def _held_back(self, file: ServedFile) -> bool:
        """Waits out ``filedelay`` and ``hangfile``; True when no body is to be sent (the
        client then sees a truncated body)."""
        plan = file.plan
        if plan.file_delay_ms and await self._stopped_within(plan.file_delay_ms / 1000):
            return True
        if file.index in plan.hanging_indices():
            await self._stopped_within(HANG_SECONDS)
            return True
        return False

    async def _write_body(
        self, response: web.StreamResponse, plan: ExportPlan, chunks: Iterator[bytes]
    ) -> None:
        pacer = Pacer(plan.rate_mib * MIB) if plan.rate_mib else None
        for chunk in chunks:
            if pacer is not None and await self._stopped_within(pacer.delay(len(chunk))):
                return
            try:
                await response.write(chunk)
            except ConnectionError:  # the client went away: what was written stays counted
                return
            self._count("bytes", plan.export_id, amount=len(chunk))
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
