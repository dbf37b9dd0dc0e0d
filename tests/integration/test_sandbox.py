"""The sandbox Export API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import re
import resource
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from src.local.sandbox import ExportPlan, SandboxExportApi

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxExportApi]:
    with SandboxExportApi() as running:
        yield running


@pytest.fixture
def tag() -> str:
    """A unique first token, so each test's export ids have their own counters."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def get_status(
    session: aiohttp.ClientSession, sandbox: SandboxExportApi, export_id: str
) -> tuple[int, Any]:
    async with session.get(f"{sandbox.base_url}/exports/{export_id}") as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def download(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as response:
        return response.status, await response.read()


def test_plan_parses_keywords_and_ignores_unknown_tokens() -> None:
    default = ExportPlan.parse("550e8400-e29b-41d4-a716-446655440000")
    assert (default.file_count, default.file_size, list(default.failing_indices())) == (1, 1024, [])

    plan = ExportPlan.parse("abc-files-10-sizemb-2-fail-3-flakyfile-1-pending-2-malformed-array")
    assert plan.file_count == 10
    assert plan.file_size == 2 * 1024 * 1024
    assert list(plan.failing_indices()) == [7, 8, 9]
    assert (plan.flaky_requests, plan.pending_polls, plan.malformed) == (1, 2, "array")

    assert ExportPlan.parse("t-files-0").file_count == 0
    assert ExportPlan.parse("t-files-x-size-7").file_count == 1  # "files" without a number
    assert ExportPlan.parse("t-traversal").file_name(0) == "../../etc/passwd"
    assert ExportPlan.parse("t-malformed-nonsense").malformed is None


async def test_ready_export_lists_downloadable_files(sandbox, session, tag) -> None:
    export_id = f"{tag}-files-3-size-5000"
    status, body = await get_status(session, sandbox, export_id)

    assert status == 200
    assert body["exportId"] == export_id
    assert body["status"] == "ready"
    for field in ("createdAt", "completedAt", "expiresAt"):
        assert ISO_MS_Z.match(body[field]), body[field]
    entries = body["downloadUrls"]
    assert [entry["fileName"] for entry in entries] == ["file-0.bin", "file-1.bin", "file-2.bin"]
    for index, entry in enumerate(entries):
        assert "checksum" not in entry and "fileSize" not in entry
        query = parse_qs(urlsplit(entry["url"]).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Credential"] == ["SANDBOX"]
        assert HEX64.match(query["X-Amz-Signature"][0])
        status, data = await download(session, entry["url"])
        assert status == 200
        assert data == SandboxExportApi.file_bytes(export_id, index, 5000)
        assert hashlib.sha256(data).hexdigest() == SandboxExportApi.file_sha256(
            export_id, index, 5000
        )
    assert sandbox.poll_count(export_id) == 1
    assert sandbox.file_requests(export_id) == 3
    assert SandboxExportApi.file_bytes(export_id, 0, 5000) != SandboxExportApi.file_bytes(
        export_id, 1, 5000
    )


async def test_last_k_files_answer_404(sandbox, session, tag) -> None:
    _, body = await get_status(session, sandbox, f"{tag}-files-10-fail-3")

    statuses = [(await download(session, entry["url"]))[0] for entry in body["downloadUrls"]]

    assert statuses == [200] * 7 + [404] * 3


async def test_pending_polls_answer_processing_then_ready(sandbox, session, tag) -> None:
    export_id = f"{tag}-pending-2"

    statuses = [(await get_status(session, sandbox, export_id))[1]["status"] for _ in range(3)]

    assert statuses == ["processing", "processing", "ready"]
    assert sandbox.poll_count(export_id) == 3


@pytest.mark.parametrize(
    ("keyword", "status", "code", "message"),
    [
        ("failed", "failed", "EXPORT_GENERATION_FAILED", "Export generation failed in sandbox"),
        ("expired", "expired", "EXPORT_EXPIRED", "Export expired"),
    ],
)
async def test_failed_and_expired_exports_carry_an_error(
    sandbox, session, tag, keyword, status, code, message
) -> None:
    http_status, body = await get_status(session, sandbox, f"{tag}-{keyword}")

    assert http_status == 200
    assert body["status"] == status
    assert body["error"] == {"code": code, "message": message}
    assert "downloadUrls" not in body


async def test_zero_files_is_ready_without_download_urls(sandbox, session, tag) -> None:
    _, body = await get_status(session, sandbox, f"{tag}-files-0")

    assert body["status"] == "ready"
    assert "downloadUrls" not in body


async def test_checksum_and_badchecksum(sandbox, session, tag) -> None:
    good_id, bad_id = f"{tag}-files-2-size-300-checksum", f"{tag}-files-2-size-300-badchecksum"
    _, good = await get_status(session, sandbox, good_id)
    _, bad = await get_status(session, sandbox, bad_id)

    for index, entry in enumerate(good["downloadUrls"]):
        assert entry["fileSize"] == 300
        assert entry["checksum"] == SandboxExportApi.file_sha256(good_id, index, 300)
    wrong, right = bad["downloadUrls"]
    assert HEX64.match(wrong["checksum"])
    assert wrong["checksum"] != SandboxExportApi.file_sha256(bad_id, 0, 300)
    assert right["checksum"] == SandboxExportApi.file_sha256(bad_id, 1, 300)


async def test_api500_answers_plain_text_500s_first(sandbox, session, tag) -> None:
    export_id = f"{tag}-api500-2"

    answers = [await get_status(session, sandbox, export_id) for _ in range(3)]

    assert [status for status, _ in answers] == [500, 500, 200]
    assert isinstance(answers[0][1], str)
    assert answers[2][1]["status"] == "ready"


async def test_flaky_file_answers_503_then_succeeds(sandbox, session, tag) -> None:
    export_id = f"{tag}-flakyfile-2"
    _, body = await get_status(session, sandbox, export_id)
    url = body["downloadUrls"][0]["url"]

    statuses = [(await download(session, url))[0] for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert sandbox.file_requests(export_id) == 3


async def test_missing_export_is_404(sandbox, session) -> None:
    assert await get_status(session, sandbox, "missing") == (404, {"message": "export not found"})


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("notjson", lambda body: body == "<html>oops"),
        ("array", lambda body: body == []),
        ("nostatus", lambda body: "status" not in body),
        ("badstatus", lambda body: body["status"] == "done"),
        ("badurls", lambda body: isinstance(body["downloadUrls"], str)),
        ("badentry", lambda body: "url" not in body["downloadUrls"][0]),
        ("numberid", lambda body: isinstance(body["exportId"], int)),
    ],
)
async def test_malformed_bodies(sandbox, session, tag, kind, check) -> None:
    status, body = await get_status(session, sandbox, f"{tag}-malformed-{kind}")

    assert status == 200
    assert check(body)


async def test_traversal_file_name_is_listed_and_downloadable(sandbox, session, tag) -> None:
    export_id = f"{tag}-files-2-traversal"
    _, body = await get_status(session, sandbox, export_id)
    entry = body["downloadUrls"][0]

    status, data = await download(session, entry["url"])

    assert entry["fileName"] == "../../etc/passwd"
    assert (status, data) == (200, SandboxExportApi.file_bytes(export_id, 0, 1024))


async def test_filedelay_holds_the_body_back(sandbox, session, tag) -> None:
    _, body = await get_status(session, sandbox, f"{tag}-filedelay-300")
    started = time.monotonic()

    status, _ = await download(session, body["downloadUrls"][0]["url"])

    assert status == 200
    assert time.monotonic() - started >= 0.29


async def test_apihang_times_out_the_client_and_stop_is_prompt(tag) -> None:
    hanging = SandboxExportApi()
    hanging.start()
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        with pytest.raises(asyncio.TimeoutError):
            await get_status(client, hanging, f"{tag}-apihang-1")
        status, body = await get_status(client, hanging, f"{tag}-apihang-1")
    assert (status, body["status"]) == (200, "ready")

    started = time.monotonic()
    await asyncio.to_thread(hanging.stop)
    assert time.monotonic() - started < 5


async def test_large_file_streams_with_flat_memory(sandbox, session, tag) -> None:
    export_id = f"{tag}-sizemb-64"
    size = 64 * 1024 * 1024
    _, body = await get_status(session, sandbox, export_id)
    expected = await asyncio.to_thread(SandboxExportApi.file_sha256, export_id, 0, size)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    digest, received = hashlib.sha256(), 0
    async with session.get(body["downloadUrls"][0]["url"]) as response:
        assert response.content_length == size
        async for chunk in response.content.iter_chunked(64 * 1024):
            digest.update(chunk)
            received += len(chunk)

    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib
    assert received == size
    assert digest.hexdigest() == expected
    assert growth_kib < 32 * 1024, f"peak RSS grew by {growth_kib} KiB"
