"""S3StreamingUpload: bytes in, one object out, memory bounded by the part size."""

from __future__ import annotations

import asyncio
import io
from typing import Any


class S3StreamingUpload:
    """Buffers up to `threshold` bytes; a smaller object is one PutObject, a larger one a
    multipart upload with at most `parts_in_flight` parts uploading at a time. Peak memory
    is about (parts_in_flight + 1) x part_size, whatever the object's size."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        part_size: int,
        threshold: int,
        parts_in_flight: int = 2,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._threshold = max(threshold, part_size)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._next_part = 1
        self._slots = asyncio.Semaphore(parts_in_flight)

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if self._upload_id is None and len(self._buffer) < self._threshold:
            return
        while len(self._buffer) >= self._part_size:
            await self._start_part(self._part_size)

    async def complete(self, metadata: dict[str, str]) -> None:
        if self._upload_id is None:
            await self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), Metadata=metadata
            )
            self._buffer.clear()
            return
        if self._buffer or not self._tasks:  # no empty extra part after an exact fit
            await self._start_part(len(self._buffer))
        await self._drain()
        parts = sorted(self._parts, key=lambda p: p["PartNumber"])
        await self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )
        # Multipart metadata is fixed at creation, before the hash is known: tag instead.
        tags = [{"Key": k, "Value": v} for k, v in metadata.items()]
        await self._client.put_object_tagging(
            Bucket=self._bucket, Key=self._key, Tagging={"TagSet": tags}
        )

    async def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._buffer.clear()
        if self._upload_id is not None:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )

    async def _start_part(self, size: int) -> None:
        """Wait for an upload slot *before* cutting the part, so no finished part waits in
        memory: at most `parts_in_flight` parts exist besides the buffer."""
        if self._upload_id is None:
            created = await self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        await self._slots.acquire()
        failed = [t for t in self._tasks if t.done() and t.exception() is not None]
        if failed:
            self._slots.release()
            raise failed[0].exception()  # type: ignore[misc]
        number, self._next_part = self._next_part, self._next_part + 1
        self._tasks.append(asyncio.create_task(self._upload_part(number, self._cut(size))))

    def _cut(self, size: int) -> io.BytesIO:
        """One copy of the part, into a buffer the HTTP client can send as it is (a
        BytesIO made from `bytes` would be copied again when aiohttp takes its view)."""
        body = io.BytesIO()
        with memoryview(self._buffer) as view:
            body.write(view[:size])
        del self._buffer[:size]
        body.seek(0)
        return body

    async def _upload_part(self, number: int, data: io.BytesIO) -> None:
        try:
            response = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
            self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        finally:
            self._slots.release()

    async def _drain(self) -> None:
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
