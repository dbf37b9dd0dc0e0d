"""AiohttpFileTransfer: stream an HTTP(S) URL into S3, hashing on the way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from yarl import URL

from src.application.ports.file_transfer import OnCheckpoint, TransferFailed, TransferResult
from src.domain.upload_checkpoint import UploadCheckpoint
from src.infrastructure.http.resume import CopyJob, Resumer, source_validator
from src.infrastructure.http.url_guard import UnsafeUrl, UrlPolicy, open_guarded_session
from src.infrastructure.redaction import redact_url
from src.infrastructure.s3.streaming_upload import S3StreamingUpload
from src.observability.metrics import DOWNLOAD_BYTES, DOWNLOAD_SECONDS, DOWNLOADS

log = structlog.get_logger(__name__)

_CHUNK = 256 * 1024
_MIB = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class TransferLimits:
    max_bytes: int
    timeout_seconds: float
    max_attempts: int = 3
    part_size: int = 8 * _MIB
    multipart_threshold: int = 8 * _MIB
    parts_in_flight: int = 2
    backoff_seconds: float = 0.5
    max_redirects: int = 5
    read_timeout_seconds: float = 30.0  # no byte for this long: the source stalled


def _retryable(err: BaseException) -> bool:
    return isinstance(err, TransferFailed) and err.retryable


def _refused(err: UnsafeUrl, url: str | URL) -> TransferFailed:
    log.warning("download refused", rule=err.rule, url=redact_url(str(url)))
    return TransferFailed(f"refused by download policy: {err.rule}")


async def open_file_transfer(
    s3: Any, bucket: str, limits: TransferLimits, allowed_networks: str
) -> AsyncIterator[AiohttpFileTransfer]:
    """The transfer with its own guarded session, closed on shutdown (container Resource)."""
    policy = UrlPolicy.from_setting(allowed_networks)
    async with open_guarded_session(policy) as session:
        yield AiohttpFileTransfer(session, s3, bucket, limits, policy)


class AiohttpFileTransfer:  # implements FileTransfer
    """4xx answers (except 408 and 429), size and checksum mismatches fail at once;
    network errors, timeouts and 5xx are retried a bounded number of times. A failed
    upload is aborted, so no truncated object is ever left under the key.

    Every URL, redirects included, must pass `policy`; `session` must come from
    `open_guarded_session(policy)` so that resolved addresses are checked too. A refused
    URL fails at once, its reason naming the rule, never the URL's query string."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        s3: Any,
        bucket: str,
        limits: TransferLimits,
        policy: UrlPolicy,
    ) -> None:
        self._session = session
        self._s3 = s3
        self._bucket = bucket
        self._limits = limits
        self._policy = policy
        self._resumer = Resumer(s3, bucket)

    async def transfer(
        self,
        url: str,
        key: str,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        resume: UploadCheckpoint | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> TransferResult:
        job = CopyJob(key, expected_size, expected_sha256, resume, on_checkpoint)
        began = time.monotonic()
        try:
            result = await self._transfer(url, job)
        except TransferFailed:
            DOWNLOADS.labels("failed").inc()
            DOWNLOAD_SECONDS.labels("failed").observe(time.monotonic() - began)
            raise
        DOWNLOADS.labels("stored").inc()
        DOWNLOAD_SECONDS.labels("stored").observe(time.monotonic() - began)
        DOWNLOAD_BYTES.inc(result.bytes)
        return result

    async def _transfer(self, url: str, job: CopyJob) -> TransferResult:
        try:
            checked = self._policy.check_url(url)
        except UnsafeUrl as err:
            raise _refused(err, url) from None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._limits.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=self._limits.backoff_seconds, max=10, jitter=self._limits.backoff_seconds
            ),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        tried = 0
        try:
            async for attempt in retrying:
                with attempt:
                    tried += 1
                    result = await self._attempt(checked, job)
                    return replace(result, attempts=tried)
        except TransferFailed as err:
            err.attempts = tried
            if not err.url_refused:  # refused: the caller retries with a fresh URL, resuming
                await self._resumer.discard(job)  # it failed for good: nothing to resume
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, url: URL, job: CopyJob) -> TransferResult:
        """One try; its deadline covers everything: waiting, reading, uploading, completing."""
        try:
            async with asyncio.timeout(self._limits.timeout_seconds):
                return await self._once(url, job)
        except TimeoutError:
            raise TransferFailed("download timed out", retryable=True) from None

    async def _once(self, url: URL, job: CopyJob) -> TransferResult:
        resume = await self._resumer.verified(job)
        headers: dict[str, str] = {"Accept-Encoding": "identity"}  # the bytes as stored
        if resume is not None:
            headers["Range"] = f"bytes={resume.next_offset}-"
            headers["If-Range"] = resume.validator
        try:
            async with await self._follow(url, headers) as response:
                resume = await self._resumer.matched(job, resume, response)
                if resume is not None and response.status == 416:
                    return await self._stream(None, job, resume)  # every byte is stored
                self._check_response(response, None if resume else job.expected_size)
                return await self._stream(response, job, resume)
        except UnsafeUrl as err:
            raise _refused(err, url) from None
        except aiohttp.ClientError as err:
            reason = f"download failed ({type(err).__name__})"
            raise TransferFailed(reason, retryable=True) from None
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", "Unknown"))
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            retryable = status >= 500 or "Throttl" in code or code in ("SlowDown", "NoSuchUpload")
            raise TransferFailed(f"storage failed ({code})", retryable=retryable) from None
        except BotoCoreError as err:
            raise TransferFailed(f"storage failed ({type(err).__name__})", retryable=True) from None

    async def _follow(self, url: URL, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET `url`, following redirects ourselves so that each target is checked first.
        No automatic decompression: the object stored is exactly the bytes served."""
        for hop in range(self._limits.max_redirects + 1):
            response = await self._session.get(
                url,
                allow_redirects=False,
                headers=headers,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(sock_read=self._limits.read_timeout_seconds),
            )
            if response.status not in _REDIRECTS:
                return response
            response.release()
            location = response.headers.get(aiohttp.hdrs.LOCATION)
            if location is None:
                raise TransferFailed(f"HTTP {response.status} redirect without a Location")
            if hop == self._limits.max_redirects:
                break
            url = self._policy.check_redirect(url, location)
        raise UnsafeUrl("too-many-redirects")

    def _check_response(self, response: aiohttp.ClientResponse, expected: int | None) -> None:
        status = response.status
        if status >= 500 or status in (408, 429):
            raise TransferFailed(
                f"HTTP {status} from {redact_url(str(response.url))}", retryable=True
            )
        if status == 403:  # an expired or revoked presigned URL, most likely
            raise TransferFailed(f"HTTP 403 from {redact_url(str(response.url))}", url_refused=True)
        if status >= 400:
            raise TransferFailed(f"HTTP {status} from {redact_url(str(response.url))}")
        length = response.content_length
        if length is not None and length > self._limits.max_bytes:
            raise TransferFailed(
                f"file of {length} bytes is over the {self._limits.max_bytes} limit"
            )
        if length is not None and expected is not None and length != expected:
            raise TransferFailed(f"size mismatch: expected {expected} bytes, server sends {length}")

    async def _stream(
        self, response: aiohttp.ClientResponse | None, job: CopyJob, resume: UploadCheckpoint | None
    ) -> TransferResult:
        """Source bytes → upload. `response` None: everything is stored already (a replica
        died between the last part and completing the upload)."""
        limits = self._limits
        headers = response.headers if response is not None else {}
        upload = S3StreamingUpload(
            self._s3,
            self._bucket,
            job.key,
            part_size=limits.part_size,
            threshold=limits.multipart_threshold,
            parts_in_flight=limits.parts_in_flight,
            content_type=headers.get(aiohttp.hdrs.CONTENT_TYPE),
            content_encoding=headers.get(aiohttp.hdrs.CONTENT_ENCODING),
            resume=resume,
            validator=source_validator(response) if response is not None else None,
            on_checkpoint=job.checkpoint,
        )
        size = resume.next_offset if resume else 0
        try:
            if response is not None:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise TransferFailed(f"file is over the {limits.max_bytes} byte limit")
                    await upload.write(chunk)
            sha256 = await upload.seal()
            self._verify(size, sha256, job.expected_size, job.expected_sha256)
            await upload.complete({"bytes": str(size)})
        except BaseException as err:
            await self._resumer.keep_or_abort(job, upload, err)
            raise
        return TransferResult(key=job.key, bytes=size, sha256=sha256)

    @staticmethod
    def _verify(size: int, sha256: str, expected_size: int | None, expected: str | None) -> None:
        if expected_size is not None and size != expected_size:
            raise TransferFailed(f"size mismatch: expected {expected_size} bytes, got {size}")
        if expected is not None and sha256 != expected.lower():
            raise TransferFailed(f"checksum mismatch: expected sha256 {expected}, got {sha256}")
