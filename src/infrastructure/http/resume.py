"""Resuming a big file's copy: which stored parts still count, and what to throw away."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from botocore.exceptions import ClientError

from src.application.ports.file_transfer import OnCheckpoint, TransferFailed
from src.domain.upload_checkpoint import UploadCheckpoint
from src.infrastructure.s3.part_hasher import PartHasher
from src.infrastructure.s3.streaming_upload import S3StreamingUpload

log = structlog.get_logger(__name__)

_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+)")


@dataclass
class CopyJob:
    """One file's copy across its attempts: `latest` is the newest stored checkpoint."""

    key: str
    expected_size: int | None
    expected_sha256: str | None
    latest: UploadCheckpoint | None
    on_checkpoint: OnCheckpoint | None

    async def checkpoint(self, checkpoint: UploadCheckpoint) -> None:
        if self.on_checkpoint is not None:
            await self.on_checkpoint(checkpoint)  # LeaseLost stops the copy here
        self.latest = checkpoint


def source_validator(response: aiohttp.ClientResponse) -> str | None:
    """What If-Range can check later: a strong ETag, else Last-Modified (RFC 9110)."""
    etag = response.headers.get(aiohttp.hdrs.ETAG)
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get(aiohttp.hdrs.LAST_MODIFIED)


class Resumer:
    """Stored parts are used only when S3 still has them with the same ETags and the
    source answers the Range with exactly the missing bytes of the same content (If-Range);
    otherwise the stale upload is aborted and the copy starts over from byte 0."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    async def verified(self, job: CopyJob) -> UploadCheckpoint | None:
        checkpoint = job.latest
        if checkpoint is None:
            return None
        if not PartHasher.can_resume() or not await self._parts_match(job.key, checkpoint):
            await self.discard(job)
            return None
        return checkpoint

    async def matched(
        self, job: CopyJob, resume: UploadCheckpoint | None, response: aiohttp.ClientResponse
    ) -> UploadCheckpoint | None:
        """The checkpoint to continue from, given how the source answered the Range."""
        if resume is None:
            if response.status == 206:
                raise TransferFailed("source sent partial content unasked", retryable=True)
            return None
        if response.status in (206, 416):
            match = _CONTENT_RANGE.fullmatch(response.headers.get(aiohttp.hdrs.CONTENT_RANGE, ""))
            total = int(match.group(3)) if match else -1
            start = int(match.group(1)) if match and match.group(1) else total
            fits = job.expected_size is None or total == job.expected_size
            if start == resume.next_offset and fits and (response.status == 206 or start == total):
                log.info(
                    "resuming a stored upload", offset=resume.next_offset, parts=len(resume.parts)
                )
                return resume
            await self.discard(job)
            raise TransferFailed(
                "source answered another byte range; starting over", retryable=True
            )
        if 200 <= response.status < 300:
            log.info("source cannot resume (no ranges, or it changed): starting over")
            await self.discard(job)
            return None
        return resume  # an error answer: the checkpoint stays for the next attempt

    async def keep_or_abort(
        self, job: CopyJob, upload: S3StreamingUpload, err: BaseException
    ) -> None:
        """After a failed attempt: keep checkpointed parts for the next one (or another
        replica), abort what nothing can resume. Never hides the original error."""
        final = isinstance(err, TransferFailed) and not (err.retryable or err.url_refused)
        kept = job.latest is not None and job.latest.upload_id == upload.upload_id
        with contextlib.suppress(Exception):
            if kept and not final:
                await upload.stop()
            else:
                await upload.abort()
                if kept:
                    job.latest = None

    async def discard(self, job: CopyJob) -> None:
        checkpoint, job.latest = job.latest, None
        if checkpoint is None:
            return
        with contextlib.suppress(ClientError):  # NoSuchUpload: already gone
            await self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=job.key, UploadId=checkpoint.upload_id
            )

    async def _parts_match(self, key: str, checkpoint: UploadCheckpoint) -> bool:
        stored: dict[int, str] = {}
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": key,
            "UploadId": checkpoint.upload_id,
        }
        try:
            while True:
                page = await self._s3.list_parts(**kwargs)
                stored.update({p["PartNumber"]: p["ETag"] for p in page.get("Parts", [])})
                if not page.get("IsTruncated"):
                    break
                kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]
        except ClientError:
            return False  # NoSuchUpload (aborted, or completed meanwhile)
        return all(stored.get(p.number) == p.etag for p in checkpoint.parts)
