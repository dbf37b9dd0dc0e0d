"""AiohttpFileTransfer (+ S3StreamingUpload) from the sandbox file server into the
embedded S3: one PutObject or a multipart upload, sha256 on the fly, limits, retries,
and nothing left under the key (or open as an upload) when a transfer fails. Then the
hard cases: byte-exact copies of encoded files, resuming a big file from its last stored
part (Range + If-Range), starting over when the source cannot resume or changed, and a
refused (expired) presigned URL."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from src.application.ports.file_transfer import TransferFailed
from src.domain.upload_checkpoint import UploadCheckpoint
from src.infrastructure.http.file_transfer import AiohttpFileTransfer, TransferLimits
from src.infrastructure.http.url_guard import UrlPolicy, open_guarded_session
from src.local.provision import Resources
from src.local.sandbox import ExportPlan, SandboxExportApi, listed_checksums
from src.local.stack import EmbeddedStack
from tests.integration.conftest import provision_for, service_client, sync_client

MIB = 1024 * 1024
SANDBOX_ONLY = UrlPolicy.from_setting("127.0.0.1/32")  # what EmbeddedStack.env() sets


class RecordingS3:
    """The real aioboto3 S3 client, counting the calls made through it (the emulator counts
    only JSON/query-protocol operations, not S3's REST ones)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attribute(*args, **kwargs)

        return recorded


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "s3")


@pytest.fixture(scope="module")
def s3(embedded_stack: EmbeddedStack) -> Any:
    return sync_client(embedded_stack, "s3")


@pytest.fixture
def sandbox(embedded_stack: EmbeddedStack) -> SandboxExportApi:
    return embedded_stack.sandbox


@pytest.fixture
async def recording_s3(embedded_stack: EmbeddedStack) -> AsyncIterator[RecordingS3]:
    async with service_client(embedded_stack, "s3") as client:
        yield RecordingS3(client)


@pytest.fixture
async def guarded_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_guarded_session(SANDBOX_ONLY) as session:
        yield session


@pytest.fixture
def make_transfer(
    guarded_session: aiohttp.ClientSession, recording_s3: RecordingS3, resources: Resources
) -> Callable[..., AiohttpFileTransfer]:
    def make(bucket: str | None = None, **limits: Any) -> AiohttpFileTransfer:
        settings: dict[str, Any] = {
            "max_bytes": 128 * MIB,
            "timeout_seconds": 30.0,
            "max_attempts": 3,
            "backoff_seconds": 0.01,
            **limits,
        }
        return AiohttpFileTransfer(
            guarded_session,
            recording_s3,
            bucket or resources.bucket,
            TransferLimits(**settings),
            SANDBOX_ONLY,
        )

    return make


def url_of(sandbox: SandboxExportApi, export_id: str, index: int = 0) -> str:
    return sandbox.file_url(ExportPlan.parse(export_id), index)


def listed_checksum(sandbox: SandboxExportApi, export_id: str, index: int = 0) -> str:
    """The checksum the Export API lists for the file (wrong for file 0 of badchecksum)."""
    return listed_checksums(sandbox.plan(export_id))[index]


def keys_under(s3: Any, resources: Resources, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=resources.bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def open_uploads(s3: Any, resources: Resources, prefix: str) -> list[str]:
    listed = s3.list_multipart_uploads(Bucket=resources.bucket, Prefix=prefix)
    return [upload["Key"] for upload in listed.get("Uploads", [])]


def stored_sha256(s3: Any, resources: Resources, key: str) -> tuple[int, str]:
    body = s3.get_object(Bucket=resources.bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in body.iter_chunks(MIB):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def assert_nothing_left(s3: Any, resources: Resources, key: str) -> None:
    assert keys_under(s3, resources, key) == []
    assert open_uploads(s3, resources, key) == []


def assert_safe(reason: str) -> None:
    assert "X-Amz-Signature" not in reason
    assert "X-Amz-Credential" not in reason


async def test_small_file_is_one_put_object_with_its_sha256(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-5000"
    key = f"exports/{export_id}/0_file-0.bin"
    expected = SandboxExportApi.file_sha256(export_id, 0, 5000)

    result = await make_transfer().transfer(url_of(sandbox, export_id), key)

    assert (result.key, result.bytes, result.sha256) == (key, 5000, expected)
    assert recording_s3.calls == Counter({"put_object": 1})
    stored = s3.get_object(Bucket=resources.bucket, Key=key)
    assert stored["Body"].read() == SandboxExportApi.file_bytes(export_id, 0, 5000)
    assert stored["ContentLength"] == 5000
    assert stored["Metadata"] == {"sha256": expected, "bytes": "5000"}
    assert sandbox.file_requests(export_id) == 1


async def test_listed_size_and_checksum_that_match_pass(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-files-2-size-3000-checksum"
    key = f"exports/{export_id}/1_file-1.bin"

    result = await make_transfer().transfer(
        url_of(sandbox, export_id, 1),
        key,
        expected_size=3000,
        expected_sha256=listed_checksum(sandbox, export_id, 1).upper(),  # hex in any case
    )

    assert result.sha256 == SandboxExportApi.file_sha256(export_id, 1, 3000)
    assert keys_under(s3, resources, key) == [key]


async def test_empty_file_is_stored(make_transfer, recording_s3, sandbox, s3, resources, new_tag):
    export_id = f"{new_tag()}-size-0"
    key = f"exports/{export_id}/0_file-0.bin"

    result = await make_transfer().transfer(url_of(sandbox, export_id), key, expected_size=0)

    assert (result.bytes, result.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert recording_s3.calls == Counter({"put_object": 1})
    assert s3.head_object(Bucket=resources.bucket, Key=key)["ContentLength"] == 0


async def test_large_file_is_a_multipart_upload_with_its_sha256_tag(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-sizemb-64"
    size = 64 * MIB
    key = f"exports/{export_id}/0_file-0.bin"
    expected = SandboxExportApi.file_sha256(export_id, 0, size)
    transfer = make_transfer(part_size=8 * MIB, multipart_threshold=8 * MIB)

    result = await transfer.transfer(url_of(sandbox, export_id), key, expected_size=size)

    assert (result.bytes, result.sha256) == (size, expected)
    assert recording_s3.calls == Counter(
        {
            "create_multipart_upload": 1,
            "upload_part": 8,
            "complete_multipart_upload": 1,
            "put_object_tagging": 1,
        }
    )
    assert stored_sha256(s3, resources, key) == (size, expected)
    tags = s3.get_object_tagging(Bucket=resources.bucket, Key=key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"sha256": expected, "bytes": str(size)}
    assert open_uploads(s3, resources, key) == []


async def test_file_of_one_part_plus_a_tail_is_two_parts(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    size = 5 * MIB + 12345
    export_id = f"{new_tag()}-size-{size}"
    key = f"exports/{export_id}/0_file-0.bin"

    result = await make_transfer(part_size=5 * MIB, multipart_threshold=5 * MIB).transfer(
        url_of(sandbox, export_id), key
    )

    assert recording_s3.calls["upload_part"] == 2
    assert stored_sha256(s3, resources, key) == (size, result.sha256)


async def test_file_of_exactly_one_part_is_one_upload_part(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-sizemb-8"
    key = f"exports/{export_id}/0_file-0.bin"

    result = await make_transfer(part_size=8 * MIB, multipart_threshold=8 * MIB).transfer(
        url_of(sandbox, export_id), key
    )

    assert stored_sha256(s3, resources, key) == (8 * MIB, result.sha256)
    assert recording_s3.calls["upload_part"] == 1


async def test_checksum_mismatch_fails_and_leaves_nothing(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-4096-badchecksum"
    key = f"exports/{export_id}/0_file-0.bin"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer().transfer(
            url_of(sandbox, export_id), key, expected_sha256=listed_checksum(sandbox, export_id)
        )

    assert "checksum mismatch" in failed.value.reason
    assert not failed.value.retryable
    assert sandbox.file_requests(export_id) == 1  # not retried
    assert_nothing_left(s3, resources, key)


async def test_checksum_mismatch_of_a_multipart_upload_aborts_it(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-sizemb-12-badchecksum"
    key = f"exports/{export_id}/0_file-0.bin"
    transfer = make_transfer(part_size=5 * MIB, multipart_threshold=5 * MIB)

    with pytest.raises(TransferFailed) as failed:
        await transfer.transfer(
            url_of(sandbox, export_id), key, expected_sha256=listed_checksum(sandbox, export_id)
        )

    assert "checksum mismatch" in failed.value.reason
    assert recording_s3.calls["create_multipart_upload"] == 1
    assert recording_s3.calls["abort_multipart_upload"] == 1
    assert recording_s3.calls["complete_multipart_upload"] == 0
    assert_nothing_left(s3, resources, key)


async def test_size_mismatch_fails_before_uploading(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-2000"
    key = f"exports/{export_id}/0_file-0.bin"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer().transfer(url_of(sandbox, export_id), key, expected_size=1999)

    assert failed.value.reason == "size mismatch: expected 1999 bytes, server sends 2000"
    assert sum(recording_s3.calls.values()) == 0
    assert_nothing_left(s3, resources, key)


async def test_404_fails_at_once_without_the_signature(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-fail-1"
    key = f"exports/{export_id}/0_file-0.bin"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer(max_attempts=3).transfer(url_of(sandbox, export_id), key)

    path = f"/files/{export_id}/0/file-0.bin"
    assert failed.value.reason.startswith("HTTP 404 from http://127.0.0.1")
    assert failed.value.reason.endswith(f"{path}?<redacted>")
    assert_safe(failed.value.reason)
    assert_safe(str(failed.value))
    assert not failed.value.retryable
    assert sandbox.file_requests(export_id) == 1
    assert_nothing_left(s3, resources, key)


async def test_5xx_is_retried_until_the_file_comes(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-flakyfile-2"
    key = f"exports/{export_id}/0_file-0.bin"

    result = await make_transfer(max_attempts=3).transfer(url_of(sandbox, export_id), key)

    assert result.sha256 == SandboxExportApi.file_sha256(export_id, 0, 1024)
    assert sandbox.file_requests(export_id) == 3
    assert keys_under(s3, resources, key) == [key]


async def test_5xx_beyond_the_attempts_fails_retryable(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-flakyfile-5"
    key = f"exports/{export_id}/0_file-0.bin"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer(max_attempts=2).transfer(url_of(sandbox, export_id), key)

    assert failed.value.reason.startswith("HTTP 503 from ")
    assert_safe(failed.value.reason)
    assert failed.value.retryable
    assert sandbox.file_requests(export_id) == 2
    assert_nothing_left(s3, resources, key)


async def test_file_over_the_size_limit_fails_without_an_object(
    make_transfer, recording_s3, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-10000"
    key = f"exports/{export_id}/0_file-0.bin"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer(max_bytes=9999).transfer(url_of(sandbox, export_id), key)

    assert "9999" in failed.value.reason and "limit" in failed.value.reason
    assert not failed.value.retryable
    assert sandbox.file_requests(export_id) == 1
    assert sum(recording_s3.calls.values()) == 0
    assert_nothing_left(s3, resources, key)


async def test_slow_body_times_out_and_leaves_nothing(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-filedelay-2000"
    key = f"exports/{export_id}/0_file-0.bin"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer(timeout_seconds=0.2, max_attempts=2).transfer(
            url_of(sandbox, export_id), key
        )

    assert failed.value.reason == "download timed out"
    assert failed.value.retryable
    assert sandbox.file_requests(export_id) == 2
    assert_nothing_left(s3, resources, key)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/file.bin?X-Amz-Signature=abc",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_",
        "127.0.0.1/no-scheme",
    ],
)
async def test_only_http_and_https_urls_are_fetched(make_transfer, recording_s3, url) -> None:
    with pytest.raises(TransferFailed) as failed:
        await make_transfer().transfer(url, "exports/never/0_x.bin")

    assert failed.value.reason == "refused by download policy: scheme-not-allowed"
    assert not failed.value.retryable
    assert sum(recording_s3.calls.values()) == 0


async def test_s3_errors_are_transfer_failures(make_transfer, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-size-100"

    with pytest.raises(TransferFailed) as failed:
        await make_transfer(bucket="it-no-such-bucket-anywhere").transfer(
            url_of(sandbox, export_id), f"exports/{export_id}/0_file-0.bin"
        )

    assert_safe(failed.value.reason)


# --- byte-exact copies, resuming, starting over, refused URLs --------------------------

PART = 5 * MIB
SIZE = 6 * PART  # 30 MiB: six parts


def big_transfer(make_transfer: Any) -> Any:
    return make_transfer(part_size=PART, multipart_threshold=PART, parts_in_flight=2)


async def copy_until_checkpoints(
    transfer: Any, url: str, key: str, wanted: int
) -> list[UploadCheckpoint]:
    """Start a copy and kill it (as SIGKILL would: no clean-up) after `wanted` checkpoints."""
    seen: list[UploadCheckpoint] = []
    enough = asyncio.Event()

    async def record(checkpoint: UploadCheckpoint) -> None:
        seen.append(checkpoint)
        if len(seen) >= wanted:
            enough.set()

    copying = asyncio.create_task(
        transfer.transfer(url, key, expected_size=SIZE, on_checkpoint=record)
    )
    waiting = asyncio.create_task(enough.wait())
    await asyncio.wait({copying, waiting}, return_when=asyncio.FIRST_COMPLETED)
    assert not copying.done(), "the copy finished before it could be interrupted"
    copying.cancel()
    waiting.cancel()
    await asyncio.gather(copying, return_exceptions=True)
    return seen


async def test_gzip_encoded_file_is_stored_byte_for_byte_with_its_headers(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-gzip-checksum-size-300000"
    served = SandboxExportApi.served_bytes(export_id, 0, 300_000)
    key = f"exports/{export_id}/0_file-0.bin"
    result = await make_transfer().transfer(
        url_of(sandbox, export_id),
        key,
        expected_size=len(served),
        expected_sha256=SandboxExportApi.served_sha256(export_id, 0, 300_000),
    )
    stored = s3.get_object(Bucket=resources.bucket, Key=key)
    assert stored["Body"].read() == served  # compressed, exactly as served
    assert served[:2] == b"\x1f\x8b"
    assert stored["ContentEncoding"] == "gzip"
    assert stored["ContentType"] == "text/csv"
    assert result.bytes == len(served)


async def test_content_type_is_kept_on_a_multipart_object(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-{2 * PART + 10}"
    key = f"exports/{export_id}/0_file-0.bin"
    await big_transfer(make_transfer).transfer(url_of(sandbox, export_id), key)
    head = s3.head_object(Bucket=resources.bucket, Key=key)
    assert head["ContentType"] == "application/octet-stream"


async def test_an_interrupted_copy_resumes_from_its_last_stored_part(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-{SIZE}-ratemb-40"
    url, key = url_of(sandbox, export_id), f"exports/{export_id}/0_file-0.bin"
    checkpoints = await copy_until_checkpoints(big_transfer(make_transfer), url, key, 3)
    last = checkpoints[2]  # a part in flight may have been stored too before the kill
    # A checkpoint covers every part stored without a gap by then: usually one more part
    # each, but when two parts land before a checkpoint runs (a busy machine) it has both.
    stored = len(last.parts)
    assert 3 <= stored < SIZE // PART  # some parts stored, some still to copy
    assert [p.number for p in last.parts] == list(range(1, stored + 1))
    assert last.next_offset == stored * PART
    sent_before = sandbox.bytes_sent(export_id)

    result = await big_transfer(make_transfer).transfer(url, key, expected_size=SIZE, resume=last)

    expected = SandboxExportApi.file_sha256(export_id, 0, SIZE)
    assert (result.bytes, result.sha256) == (SIZE, expected)
    assert stored_sha256(s3, resources, key) == (SIZE, expected)
    assert sandbox.range_requests(export_id) == 1

    def resent() -> int:
        return sandbox.bytes_sent(export_id) - sent_before

    for _ in range(50):  # the counter catches up with the last write
        if resent() >= SIZE - last.next_offset:
            break
        await asyncio.sleep(0.05)
    assert resent() == SIZE - last.next_offset  # only the missing bytes came again
    assert open_uploads(s3, resources, key) == []


@pytest.mark.parametrize("keyword", ["norange", "changing"])
async def test_a_source_that_cannot_resume_or_changed_starts_over_and_drops_the_stale_upload(
    make_transfer, sandbox, s3, resources, new_tag, keyword
) -> None:
    export_id = f"{new_tag()}-{keyword}-size-{SIZE}-ratemb-40"
    url, key = url_of(sandbox, export_id), f"exports/{export_id}/0_file-0.bin"
    checkpoints = await copy_until_checkpoints(big_transfer(make_transfer), url, key, 2)
    stale = checkpoints[-1].upload_id

    result = await big_transfer(make_transfer).transfer(
        url, key, expected_size=SIZE, resume=checkpoints[-1]
    )

    expected = SandboxExportApi.file_sha256(export_id, 0, SIZE)
    assert result.sha256 == expected
    assert stored_sha256(s3, resources, key) == (SIZE, expected)
    assert sandbox.range_requests(export_id) == 0
    uploads = s3.list_multipart_uploads(Bucket=resources.bucket, Prefix=key).get("Uploads", [])
    assert stale not in [u["UploadId"] for u in uploads]


async def test_a_checkpoint_whose_upload_is_gone_starts_over(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-{SIZE}-ratemb-40"
    url, key = url_of(sandbox, export_id), f"exports/{export_id}/0_file-0.bin"
    checkpoints = await copy_until_checkpoints(big_transfer(make_transfer), url, key, 2)
    s3.abort_multipart_upload(Bucket=resources.bucket, Key=key, UploadId=checkpoints[-1].upload_id)
    result = await big_transfer(make_transfer).transfer(
        url, key, expected_size=SIZE, resume=checkpoints[-1]
    )
    assert result.sha256 == SandboxExportApi.file_sha256(export_id, 0, SIZE)
    assert sandbox.range_requests(export_id) == 0


async def test_retries_within_one_transfer_resume_too(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    """A body cut mid-way (the per-attempt deadline here) is retried from the last part."""
    export_id = f"{new_tag()}-size-{SIZE}-ratemb-12"
    url, key = url_of(sandbox, export_id), f"exports/{export_id}/0_file-0.bin"
    # Enough attempts that a loaded machine still gets through (each stores what it can).
    transfer = make_transfer(
        part_size=PART, multipart_threshold=PART, timeout_seconds=1.5, max_attempts=30
    )
    result = await transfer.transfer(url, key, expected_size=SIZE, on_checkpoint=_ignore)
    assert result.sha256 == SandboxExportApi.file_sha256(export_id, 0, SIZE)
    assert result.attempts > 1
    assert sandbox.range_requests(export_id) >= 1


async def _ignore(checkpoint: UploadCheckpoint) -> None:
    return None


async def test_an_expired_presigned_url_is_refused_as_such(make_transfer, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-urlttl-1"
    issued = datetime.now(UTC) - timedelta(minutes=5)
    url = sandbox.file_url(ExportPlan.parse(export_id), 0, issued=issued)  # long expired
    with pytest.raises(TransferFailed) as failed:
        await make_transfer().transfer(url, f"exports/{export_id}/0_file-0.bin")
    assert failed.value.url_refused
    assert not failed.value.retryable
    assert "X-Amz-Signature" not in failed.value.reason
    assert sandbox.expired_refusals(export_id) == 1


async def test_a_refused_url_keeps_the_stored_parts_for_the_fresh_one(
    make_transfer, sandbox, s3, resources, new_tag
) -> None:
    export_id = f"{new_tag()}-size-{SIZE}-ratemb-40"
    url, key = url_of(sandbox, export_id), f"exports/{export_id}/0_file-0.bin"
    checkpoints = await copy_until_checkpoints(big_transfer(make_transfer), url, key, 2)
    expired_export = f"{new_tag()}-urlttl-1"
    expired = sandbox.file_url(
        ExportPlan.parse(expired_export), 0, issued=datetime.now(UTC) - timedelta(minutes=5)
    )
    with pytest.raises(TransferFailed) as failed:
        await big_transfer(make_transfer).transfer(
            expired, key, expected_size=SIZE, resume=checkpoints[-1]
        )
    assert failed.value.url_refused
    assert open_uploads(s3, resources, key) == [key]  # kept for the retry with a fresh URL
    result = await big_transfer(make_transfer).transfer(
        url, key, expected_size=SIZE, resume=checkpoints[-1]
    )
    assert result.sha256 == SandboxExportApi.file_sha256(export_id, 0, SIZE)
    assert sandbox.range_requests(export_id) == 1
