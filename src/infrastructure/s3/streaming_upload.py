"""S3StreamingUpload: bytes in, one object out, memory bounded by the part size."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any

from src.domain.upload_checkpoint import StoredPart, UploadCheckpoint
from src.infrastructure.s3.part_hasher import PartHasher

OnCheckpoint = Callable[[UploadCheckpoint], Awaitable[None]]


class S3StreamingUpload:
    """Buffers up to `threshold` bytes; a smaller object is one PutObject, a larger one a
    multipart upload with at most `parts_in_flight` parts uploading at a time.

    Bytes are written once, straight into the buffer of the part they belong to, and that
    buffer (an `io.BytesIO`, which the HTTP client sends as it is) is reused for a later
    part once its upload is done: a multipart upload holds at most `parts_in_flight` + 1
    part buffers, whatever the object's size, and allocates no new one per part (freed
    and re-allocated 8 MiB blocks are what made the RSS creep with the file's size).

    The sha256 is computed here, part by part in source order, so its state is known at
    every part boundary: each time the stored parts reach further from byte 0 without a
    gap, `on_checkpoint` gets them with that state (when the source has a `validator` to
    resume against). `resume` continues such an upload after its last stored part."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        part_size: int,
        threshold: int,
        parts_in_flight: int = 2,
        content_type: str | None = None,
        content_encoding: str | None = None,
        resume: UploadCheckpoint | None = None,
        validator: str | None = None,
        on_checkpoint: OnCheckpoint | None = None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._threshold = max(threshold, part_size)
        self._headers: dict[str, str] = {}
        if resume is not None:
            content_type, content_encoding = resume.content_type, resume.content_encoding
        if content_type:
            self._headers["ContentType"] = content_type
        if content_encoding:
            self._headers["ContentEncoding"] = content_encoding
        self._part = io.BytesIO()  # being filled; grows as needed (most files are small)
        self._held: list[io.BytesIO] = []  # full parts kept until `threshold` is reached
        self._spare: list[io.BytesIO] = []  # buffers of uploaded parts, for the next ones
        self._parts_in_flight = parts_in_flight
        self._tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(parts_in_flight)
        self._checkpoints = asyncio.Lock()
        self._validator = resume.validator if resume else validator
        self._hasher = PartHasher(resume.hash_state if resume else None)
        resumable = self._validator is not None and self._hasher.resumable
        self._on_checkpoint = on_checkpoint if resumable else None
        self._upload_id: str | None = resume.upload_id if resume else None
        self._stored: list[StoredPart] = list(resume.parts) if resume else []
        self._done: dict[int, tuple[StoredPart, str | None]] = {}
        # Parts up to (not including) this number are in a stored checkpoint; uploaded
        # parts wait for it (holding their slot) so that the checkpoints cannot lag.
        self._recorded_next = self._stored_next()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._broken = False
        self._next_part = resume.next_part_number if resume else 1
        self._offset = resume.next_offset if resume else 0
        self._sha256 = ""

    @property
    def upload_id(self) -> str | None:
        return self._upload_id

    async def write(self, chunk: bytes) -> None:
        data = memoryview(chunk)
        while data:
            room = self._part_size - self._part.tell()
            self._part.write(data[:room])
            data = data[room:]
            if self._upload_id is None:
                held = len(self._held) * self._part_size + self._part.tell()
                if held < self._threshold:
                    if self._part.tell() == self._part_size:
                        self._held.append(self._part)
                        self._part = io.BytesIO()
                    continue
                held_parts, self._held = self._held, []
                for part in held_parts:  # the object is multipart after all
                    await self._start_part(part)
            if self._part.tell() == self._part_size:
                await self._start_part(self._part)
                self._part = self._next_buffer()

    async def seal(self) -> str:
        """No more bytes: hash the rest (the last part starts uploading) and return the
        sha256 of the whole object, resumed bytes included, before anything is final."""
        if self._upload_id is None:
            self._part = self._whole()
            with self._part.getbuffer() as view:
                self._hasher.update(view)
        elif self._part.tell() or self._next_part == 1:  # no empty extra part after an exact fit
            await self._start_part(self._part)
            self._part = io.BytesIO()
        self._sha256 = self._hasher.hexdigest()
        return self._sha256

    async def complete(self, metadata: dict[str, str]) -> None:
        """Make the object visible under its key (after `seal`)."""
        metadata = {**metadata, "sha256": self._sha256}
        if self._upload_id is None:
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self._key,
                Body=self._part,
                Metadata=metadata,
                **self._headers,
            )
            self._release_buffers()
            return
        await self._drain()
        self._release_buffers()
        parts = sorted(
            [*self._stored, *(part for part, _state in self._done.values())],
            key=lambda p: p.number,
        )
        await self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )
        # Multipart metadata is fixed at creation, before the hash is known: tag instead.
        tags = [{"Key": k, "Value": v} for k, v in metadata.items()]
        await self._client.put_object_tagging(
            Bucket=self._bucket, Key=self._key, Tagging={"TagSet": tags}
        )

    async def abort(self) -> None:
        await self.stop()
        if self._upload_id is not None:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )

    async def stop(self) -> None:
        """Stop uploading but keep what is stored, for another attempt to resume."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._release_buffers()

    def _whole(self) -> io.BytesIO:
        """The PutObject body: the one buffer, or (`threshold` above the part size) the
        held parts and the rest copied into one."""
        part = self._part
        part.truncate(part.tell())
        if self._held:
            whole = io.BytesIO()
            for held in (*self._held, part):
                with held.getbuffer() as view:
                    whole.write(view)
                held.close()
            self._held.clear()
            part = whole
        part.seek(0)
        return part

    def _next_buffer(self) -> io.BytesIO:
        """A part buffer: one an uploaded part gave back, else a new one of the part's
        size, allocated once (not grown write by write)."""
        if self._spare:
            return self._spare.pop()
        buffer = io.BytesIO()
        buffer.seek(self._part_size - 1)
        buffer.write(b"\0")
        buffer.seek(0)
        return buffer

    def _release_buffers(self) -> None:
        for buffer in (*self._spare, *self._held, self._part):
            buffer.close()
        self._spare.clear()
        self._held.clear()
        self._part = io.BytesIO()

    async def _start_part(self, body: io.BytesIO) -> None:
        """Upload a full part (or the last one) once a slot is free: at most
        `parts_in_flight` parts upload while the next one fills."""
        if self._upload_id is None:
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, **self._headers
            )
            self._upload_id = created["UploadId"]
        await self._slots.acquire()
        failed = [t for t in self._tasks if t.done() and t.exception() is not None]
        if failed:
            self._slots.release()
            raise failed[0].exception()  # type: ignore[misc]
        size = body.tell()
        body.truncate(size)  # a reused buffer's last, shorter part
        body.seek(0)
        with body.getbuffer() as view:
            self._hasher.update(view)
        number, self._next_part = self._next_part, self._next_part + 1
        start, self._offset = self._offset, self._offset + size
        state = self._hasher.state() if self._on_checkpoint else None
        task = asyncio.create_task(self._upload_part(number, start, size, body, state))
        self._tasks.append(task)

    async def _upload_part(
        self, number: int, start: int, size: int, body: io.BytesIO, state: str | None
    ) -> None:
        uploaded = False
        try:
            response = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
            part = StoredPart(number, str(response["ETag"]), start, start + size)
            self._done[number] = (part, state)
            uploaded = True
        finally:
            # The buffer is given back (or freed, after a failure) at once: the checkpoint
            # below may wait (a DynamoDB write, other parts' checkpoints) without holding
            # a part's bytes.
            if uploaded and len(self._spare) < self._parts_in_flight:
                body.seek(0)
                self._spare.append(body)
            else:
                body.close()
            if not uploaded:
                self._broken = True  # no part waits for a checkpoint that cannot come
                self._wake()
                self._slots.release()
        # The slot is held until the part is in a stored checkpoint: at most
        # `parts_in_flight` parts are uploaded but not yet recorded, so a copy that dies
        # re-reads at most (parts_in_flight + 1) x part size, however slow the
        # checkpoints (or an earlier, slower part) are.
        try:
            await self._checkpoint()
            await self._until_recorded(number)
        finally:
            self._slots.release()

    async def _until_recorded(self, number: int) -> None:
        if self._on_checkpoint is None or self._broken or number < self._recorded_next:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[number] = waiter
        await waiter

    def _wake(self) -> None:
        for number, waiter in list(self._waiting.items()):
            if self._broken or number < self._recorded_next:
                del self._waiting[number]
                if not waiter.done():
                    waiter.set_result(None)

    async def _checkpoint(self) -> None:
        """Report the parts that now reach further from byte 0 without a gap."""
        if self._on_checkpoint is None or self._upload_id is None or self._validator is None:
            return
        async with self._checkpoints:
            state = None
            while self._stored_next() in self._done:
                part, state = self._done.pop(self._stored_next())
                self._stored.append(part)
            if state is None:
                return
            try:
                await self._on_checkpoint(
                    UploadCheckpoint(
                        upload_id=self._upload_id,
                        validator=self._validator,
                        parts=tuple(self._stored),
                        hash_state=state,
                        content_type=self._headers.get("ContentType"),
                        content_encoding=self._headers.get("ContentEncoding"),
                    )
                )
            except BaseException:
                self._broken = True
                self._wake()
                raise
            self._recorded_next = self._stored_next()
            self._wake()

    def _stored_next(self) -> int:
        return self._stored[-1].number + 1 if self._stored else 1

    async def _drain(self) -> None:
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
