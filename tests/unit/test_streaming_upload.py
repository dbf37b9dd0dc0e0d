"""S3StreamingUpload against an in-memory S3: how it cuts an object into parts, what it
hashes, and how many part buffers it holds (the memory bound) however slow the
checkpoints are. The real client and emulator are in tests/integration/test_file_transfer."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import weakref
from typing import Any

import pytest

from src.domain.upload_checkpoint import UploadCheckpoint
from src.infrastructure.s3.streaming_upload import S3StreamingUpload

PART = 1000


class MemoryS3:
    """Just the calls S3StreamingUpload makes; upload_part reads the body as aiohttp does.
    Counts the part buffers that are still open (alive and not closed) at each call."""

    def __init__(self, upload_delay: float = 0.0) -> None:
        self.upload_delay = upload_delay
        self.objects: dict[str, bytes] = {}
        self.parts: dict[int, bytes] = {}
        self.calls: list[str] = []
        self.uploading = 0
        self.most_uploading = 0
        self.most_open_buffers = 0
        self._buffers: list[weakref.ref[io.BytesIO]] = []

    async def put_object(self, *, Key: str, Body: io.BytesIO | bytes, **_: Any) -> dict[str, Any]:
        self.calls.append("put_object")
        self.objects[Key] = Body if isinstance(Body, bytes) else Body.read()
        return {}

    async def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        self.calls.append("create_multipart_upload")
        return {"UploadId": "upload-1"}

    async def upload_part(self, *, PartNumber: int, Body: io.BytesIO, **_: Any) -> dict[str, Any]:
        self.calls.append("upload_part")
        if not any(ref() is Body for ref in self._buffers):
            self._buffers.append(weakref.ref(Body))
        self.most_open_buffers = max(self.most_open_buffers, self.open_buffers())
        self.uploading += 1
        self.most_uploading = max(self.most_uploading, self.uploading)
        try:
            await asyncio.sleep(self.upload_delay)
            data = Body.read()
        finally:
            self.uploading -= 1
        self.parts[PartNumber] = data
        return {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}

    async def complete_multipart_upload(
        self, *, Key: str, MultipartUpload: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.calls.append("complete_multipart_upload")
        numbers = [part["PartNumber"] for part in MultipartUpload["Parts"]]
        assert numbers == sorted(self.parts) == list(range(1, len(numbers) + 1))
        self.objects[Key] = b"".join(self.parts[number] for number in numbers)
        return {}

    async def put_object_tagging(self, **_: Any) -> dict[str, Any]:
        self.calls.append("put_object_tagging")
        return {}

    async def abort_multipart_upload(self, **_: Any) -> dict[str, Any]:
        self.calls.append("abort_multipart_upload")
        return {}

    def open_buffers(self) -> int:
        return sum(1 for ref in self._buffers if (body := ref()) is not None and not body.closed)


def source(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def copy(
    upload: S3StreamingUpload, data: bytes, chunk: int = 256
) -> tuple[str, S3StreamingUpload]:
    for start in range(0, len(data), chunk):
        await upload.write(data[start : start + chunk])
    sha256 = await upload.seal()
    await upload.complete({"bytes": str(len(data))})
    return sha256, upload


def new_upload(s3: MemoryS3, **kwargs: Any) -> S3StreamingUpload:
    settings: dict[str, Any] = {"part_size": PART, "threshold": PART, **kwargs}
    return S3StreamingUpload(s3, "bucket", "key", **settings)


@pytest.mark.parametrize(
    ("size", "calls"),
    [
        (0, ["put_object"]),
        (PART - 1, ["put_object"]),
        (PART, ["create_multipart_upload", "upload_part"]),  # an exact fit: no empty part
        (3 * PART, ["create_multipart_upload", *["upload_part"] * 3]),
        (3 * PART + 7, ["create_multipart_upload", *["upload_part"] * 4]),
    ],
)
async def test_objects_are_one_put_below_the_threshold_else_parts_of_the_part_size(
    size: int, calls: list[str]
) -> None:
    s3 = MemoryS3()
    data = source(size)

    sha256, _ = await copy(new_upload(s3), data, chunk=333)  # chunks straddle part ends

    assert sha256 == hashlib.sha256(data).hexdigest()
    assert s3.objects["key"] == data
    multipart = calls[0] == "create_multipart_upload"
    assert s3.calls == calls + (["complete_multipart_upload", "put_object_tagging"] * multipart)
    assert all(len(part) == PART for number, part in s3.parts.items() if number < len(s3.parts))


@pytest.mark.parametrize("size", [2 * PART + 499, 2 * PART + 500, 5 * PART + 3])
async def test_a_threshold_above_the_part_size_holds_whole_parts_until_it_is_reached(
    size: int,
) -> None:
    s3 = MemoryS3()
    data = source(size)

    sha256, _ = await copy(new_upload(s3, threshold=2 * PART + 500), data, chunk=128)

    assert sha256 == hashlib.sha256(data).hexdigest()
    assert s3.objects["key"] == data
    if size < 2 * PART + 500:
        assert s3.calls == ["put_object"]
    else:
        assert [len(s3.parts[n]) for n in sorted(s3.parts)] == [
            min(PART, size - start) for start in range(0, size, PART)
        ]


async def test_slow_checkpoints_hold_no_part_buffers_beyond_the_parts_in_flight() -> None:
    """A part's buffer is given back when its upload ends, before its checkpoint (a
    DynamoDB write) is stored: at most parts_in_flight + 1 buffers (the one filling)."""
    s3 = MemoryS3(upload_delay=0.001)
    checkpoints: list[UploadCheckpoint] = []

    async def slow_checkpoint(checkpoint: UploadCheckpoint) -> None:
        await asyncio.sleep(0.02)
        checkpoints.append(checkpoint)

    upload = new_upload(s3, parts_in_flight=2, validator='"etag"', on_checkpoint=slow_checkpoint)
    data = source(40 * PART + 1)

    sha256, _ = await copy(upload, data)

    assert sha256 == hashlib.sha256(data).hexdigest()
    assert s3.objects["key"] == data
    assert s3.most_uploading == 2
    assert s3.most_open_buffers <= 3
    assert s3.open_buffers() == 0  # all freed once the object is complete
    if checkpoints:  # resumable hashing available: the last one covers every part
        assert checkpoints[-1].next_offset == len(data)


class SlowFirstPart(MemoryS3):
    """Part 1 takes far longer than the rest; records how far each part that starts is
    ahead of the last stored checkpoint."""

    def __init__(self, recorded: list[UploadCheckpoint]) -> None:
        super().__init__(upload_delay=0.001)
        self.recorded = recorded
        self.most_ahead = 0

    async def upload_part(self, *, PartNumber: int, Body: io.BytesIO, **kw: Any) -> dict[str, Any]:
        covered = len(self.recorded[-1].parts) if self.recorded else 0
        self.most_ahead = max(self.most_ahead, PartNumber - 1 - covered)
        if PartNumber == 1:
            await asyncio.sleep(0.2)
        return await super().upload_part(PartNumber=PartNumber, Body=Body, **kw)


async def test_checkpoints_never_lag_more_than_the_parts_in_flight() -> None:
    """A copy that dies re-reads at most (parts_in_flight + 1) parts: an uploaded part
    keeps its slot until a stored checkpoint covers it, even behind a slow earlier part
    or slow checkpoint writes."""
    recorded: list[UploadCheckpoint] = []

    async def slow_checkpoint(checkpoint: UploadCheckpoint) -> None:
        await asyncio.sleep(0.01)
        recorded.append(checkpoint)

    s3 = SlowFirstPart(recorded)
    upload = new_upload(s3, parts_in_flight=2, validator='"etag"', on_checkpoint=slow_checkpoint)
    data = source(30 * PART + 7)

    await copy(upload, data)

    assert s3.objects["key"] == data
    if not recorded:
        pytest.skip("resumable hashing is not available on this Python build")
    assert recorded[-1].next_offset == len(data)
    assert s3.most_ahead <= 1  # parts_in_flight - 1 others unrecorded when a part starts


async def test_a_resumed_upload_hashes_the_whole_object_from_the_checkpointed_state() -> None:
    first = MemoryS3()
    checkpoints: list[UploadCheckpoint] = []

    async def keep(checkpoint: UploadCheckpoint) -> None:
        checkpoints.append(checkpoint)

    upload = new_upload(first, validator='"etag"', on_checkpoint=keep)
    data = source(5 * PART + 11)
    for start in range(0, 3 * PART, 100):
        await upload.write(data[start : start + 100])
    await upload._drain()  # the three parts are stored (a crash would come here)
    await upload.stop()
    if not checkpoints:
        pytest.skip("no resumable sha256 (libcrypto) on this machine")
    checkpoint = checkpoints[-1]
    second = MemoryS3()
    second.parts = {number: first.parts[number] for number in (1, 2, 3)}
    resumed = new_upload(second, resume=checkpoint)

    sha256, _ = await copy(resumed, data[checkpoint.next_offset :])

    assert checkpoint.next_offset == 3 * PART
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert second.objects["key"] == data
