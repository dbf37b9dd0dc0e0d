"""The sandbox Export API over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import resource
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from src.infrastructure.http.url_guard import UnsafeUrl, UrlPolicy, open_guarded_session
from src.local.sandbox import ExportPlan, SandboxExportApi, content_chunks
from src.local.sandbox import main as sandbox_main
from tests.support.service_process import free_port

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


async def fetch(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str], bytes]:
    async with session.get(url, headers=headers) as response:
        return response.status, response.headers, await response.read()


async def first_url(
    session: aiohttp.ClientSession, sandbox: SandboxExportApi, export_id: str
) -> str:
    _, body = await get_status(session, sandbox, export_id)
    return body["downloadUrls"][0]["url"]


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Waits for the server thread to catch up (it counts a chunk just after writing it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def settled(read: Callable[[], int], quiet: float = 0.3, timeout: float = 5.0) -> int:
    """The value of ``read()`` once it has stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    value = read()
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        if read() == value:
            return value
        value = read()
    raise AssertionError("value kept changing")


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


async def test_held_exports_answer_processing_until_released(session, tag) -> None:
    first, second, plain = f"{tag}a-held-files-2", f"{tag}b-held-files-1", f"{tag}c-files-1"
    assert ExportPlan.parse(first).held and not ExportPlan.parse(plain).held
    with SandboxExportApi() as sandbox:  # its own: release_all() lasts
        statuses = [(await get_status(session, sandbox, first))[1]["status"] for _ in range(3)]
        assert statuses == ["processing"] * 3
        assert sandbox.is_held(first) and not sandbox.is_held(plain)

        sandbox.release(first)
        _, body = await get_status(session, sandbox, first)
        assert body["status"] == "ready" and len(body["downloadUrls"]) == 2
        assert (await get_status(session, sandbox, second))[1]["status"] == "processing"

        sandbox.release_all()
        assert (await get_status(session, sandbox, second))[1]["status"] == "ready"
        assert not sandbox.is_held(f"{tag}d-held")


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


# ---- file serving: ranges, validators, gzip, expiry, hangs, pacing ---------------------------


def test_plan_parses_file_serving_keywords() -> None:
    plan = ExportPlan.parse("t-files-4-norange-changing-gzip-urlttl-2-hangfile-1-ratemb-8")

    assert (plan.no_ranges, plan.changing, plan.gzip) == (True, True, True)
    assert (plan.url_ttl, plan.hanging_files, plan.rate_mib) == (2, 1, 8)
    assert list(plan.hanging_indices()) == [3]
    assert list(plan.failing_indices()) == []
    plain = ExportPlan.parse("t-files-3")
    assert (plain.no_ranges, plain.gzip, plain.url_ttl, list(plain.hanging_indices())) == (
        False,
        False,
        0,
        [],
    )


def test_content_chunks_start_at_any_offset() -> None:
    whole = SandboxExportApi.file_bytes("t", 0, 200_000)

    for start in (0, 1, 65_535, 65_536, 131_000, 199_999, 200_000):
        pieces = list(content_chunks("t", 0, 200_000, start))
        assert b"".join(pieces) == whole[start:]
        assert all(0 < len(piece) <= 64 * 1024 for piece in pieces)


def test_served_bytes_are_the_raw_content_without_gzip() -> None:
    assert SandboxExportApi.served_bytes("t-size-9", 0, 300) == SandboxExportApi.file_bytes(
        "t-size-9", 0, 300
    )
    assert SandboxExportApi.served_sha256("t", 1, 70_000) == SandboxExportApi.file_sha256(
        "t", 1, 70_000
    )


async def test_file_responses_carry_accept_ranges_and_fixed_strong_validators(
    sandbox, session, tag
) -> None:
    export_id = f"{tag}-size-3000"
    _, body = await get_status(session, sandbox, export_id)
    url = body["downloadUrls"][0]["url"]

    _, first, _ = await fetch(session, url)
    _, second, _ = await fetch(session, url)

    expected_etag = hashlib.sha256(f"{export_id}:0:3000".encode()).hexdigest()
    assert first["Accept-Ranges"] == "bytes"
    assert first["ETag"] == f'"{expected_etag}"'
    created = datetime.fromisoformat(body["createdAt"]).replace(microsecond=0)
    assert parsedate_to_datetime(first["Last-Modified"]) == created
    assert first["Last-Modified"].endswith(" GMT")
    assert (second["ETag"], second["Last-Modified"]) == (first["ETag"], first["Last-Modified"])


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-", 0, 199_999),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=65530-131080", 65530, 131080),  # across 64 KiB block boundaries
        ("bytes=150000-", 150_000, 199_999),
        ("bytes=199990-300000", 199_990, 199_999),  # the end is clipped to the file
        ("bytes=199999-199999", 199_999, 199_999),
        ("bytes=-100", 199_900, 199_999),
    ],
)
async def test_range_serves_exactly_that_slice(sandbox, session, tag, header, first, last) -> None:
    export_id = f"{tag}-size-200000"
    url = await first_url(session, sandbox, export_id)

    status, headers, data = await fetch(session, url, {"Range": header})

    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/200000"
    assert int(headers["Content-Length"]) == last - first + 1
    assert data == SandboxExportApi.file_bytes(export_id, 0, 200_000)[first : last + 1]
    assert sandbox.range_requests(export_id) == 1
    await eventually(lambda: sandbox.bytes_sent(export_id) == last - first + 1)


async def test_if_range_honours_only_the_current_validators(sandbox, session, tag) -> None:
    export_id = f"{tag}-size-5000"
    url = await first_url(session, sandbox, export_id)
    _, headers, full = await fetch(session, url)

    for validator in (headers["ETag"], headers["Last-Modified"]):
        status, _, data = await fetch(session, url, {"Range": "bytes=4000-", "If-Range": validator})
        assert (status, data) == (206, full[4000:])
    stale = ('"' + "0" * 64 + '"', f"W/{headers['ETag']}", "Mon, 01 Jan 2001 00:00:00 GMT")
    for validator in stale:
        status, answer, data = await fetch(
            session, url, {"Range": "bytes=4000-", "If-Range": validator}
        )
        assert (status, data) == (200, full)
        assert "Content-Range" not in answer
    assert sandbox.range_requests(export_id) == 2


@pytest.mark.parametrize("header", ["bytes=5000-", "bytes=9000-9999", "bytes=-0"])
async def test_unsatisfiable_range_is_416(sandbox, session, tag, header) -> None:
    export_id = f"{tag}-size-5000"
    url = await first_url(session, sandbox, export_id)

    status, headers, _ = await fetch(session, url, {"Range": header})

    assert status == 416
    assert headers["Content-Range"] == "bytes */5000"
    assert (sandbox.range_requests(export_id), sandbox.bytes_sent(export_id)) == (0, 0)


@pytest.mark.parametrize("header", ["bytes=10-5", "items=0-1", "bytes=0-1,5-6", "bytes=-"])
async def test_a_range_that_is_not_one_byte_range_is_ignored(sandbox, session, tag, header) -> None:
    export_id = f"{tag}-size-500"
    url = await first_url(session, sandbox, export_id)

    status, _, data = await fetch(session, url, {"Range": header})

    assert (status, data) == (200, SandboxExportApi.file_bytes(export_id, 0, 500))


async def test_norange_ignores_range_and_sends_no_accept_ranges(sandbox, session, tag) -> None:
    export_id = f"{tag}-size-5000-norange"
    url = await first_url(session, sandbox, export_id)

    status, headers, data = await fetch(session, url, {"Range": "bytes=100-199"})

    assert (status, data) == (200, SandboxExportApi.file_bytes(export_id, 0, 5000))
    assert "Accept-Ranges" not in headers and "Content-Range" not in headers
    assert "ETag" in headers
    assert sandbox.range_requests(export_id) == 0


async def test_changing_validators_never_let_if_range_match(sandbox, session, tag) -> None:
    export_id = f"{tag}-size-5000-changing"
    url = await first_url(session, sandbox, export_id)
    full = SandboxExportApi.file_bytes(export_id, 0, 5000)

    _, first, first_data = await fetch(session, url)
    _, second, second_data = await fetch(session, url)
    answers = [
        await fetch(session, url, {"Range": "bytes=100-", "If-Range": validator})
        for validator in (second["ETag"], second["Last-Modified"])
    ]

    assert first["ETag"] != second["ETag"]
    assert first["Last-Modified"] != second["Last-Modified"]
    assert first_data == second_data == full
    assert [(status, data) for status, _, data in answers] == [(200, full), (200, full)]
    assert sandbox.range_requests(export_id) == 0


async def test_gzip_serves_compressed_bytes_whatever_accept_encoding(sandbox, tag) -> None:
    export_id = f"{tag}-files-2-size-20000-gzip-checksum"
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        _, body = await get_status(raw, sandbox, export_id)
        for index, entry in enumerate(body["downloadUrls"]):
            served = SandboxExportApi.served_bytes(export_id, index, 20000)
            content = SandboxExportApi.file_bytes(export_id, index, 20000)
            for accept in ("identity", "gzip"):
                status, headers, data = await fetch(raw, entry["url"], {"Accept-Encoding": accept})
                assert (status, data) == (200, served)
                assert headers["Content-Encoding"] == "gzip"
                assert headers["Content-Type"] == "text/csv"
                assert int(headers["Content-Length"]) == len(served)
            assert served == gzip.compress(content, mtime=0)
            assert gzip.decompress(served) == content
            assert entry["fileSize"] == len(served) < 20000
            assert entry["checksum"] == hashlib.sha256(served).hexdigest()
            assert entry["checksum"] == SandboxExportApi.served_sha256(export_id, index, 20000)
        status, headers, data = await fetch(
            raw, body["downloadUrls"][0]["url"], {"Range": "bytes=10-"}
        )
    assert (status, data) == (206, SandboxExportApi.served_bytes(export_id, 0, 20000)[10:])


async def test_urlttl_urls_expire_and_each_listing_hands_out_fresh_ones(
    sandbox, session, tag
) -> None:
    export_id = f"{tag}-urlttl-1"
    listed_after = datetime.now(UTC)
    _, body = await get_status(session, sandbox, export_id)
    entry = body["downloadUrls"][0]
    query = parse_qs(urlsplit(entry["url"]).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expires_at = datetime.fromisoformat(entry["expiresAt"])

    assert query["X-Amz-Expires"] == ["1"]
    assert HEX64.match(query["X-Amz-Signature"][0])
    assert expires_at == signed + timedelta(seconds=1)
    assert expires_at >= listed_after + timedelta(seconds=1)
    assert (await download(session, entry["url"]))[0] == 200

    await asyncio.sleep((expires_at - datetime.now(UTC)).total_seconds() + 0.05)
    async with session.get(entry["url"]) as response:
        status, content_type, text = response.status, response.content_type, await response.text()
    assert (status, content_type) == (403, "application/xml")
    assert "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>" in text
    assert sandbox.expired_refusals(export_id) == 1

    _, fresh = await get_status(session, sandbox, export_id)
    fresh_url = fresh["downloadUrls"][0]["url"]
    assert fresh_url != entry["url"]
    assert await download(session, fresh_url) == (
        200,
        SandboxExportApi.file_bytes(export_id, 0, 1024),
    )
    assert (await download(session, fresh_url.split("?")[0]))[0] == 403  # no expiry given
    assert sandbox.expired_refusals(export_id) == 2


async def test_hangfile_times_out_the_last_file_only(sandbox, tag) -> None:
    export_id = f"{tag}-files-2-size-100000-hangfile-1"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.5)) as client:
        _, body = await get_status(client, sandbox, export_id)
        first, last = body["downloadUrls"]

        assert await download(client, first["url"]) == (
            200,
            SandboxExportApi.file_bytes(export_id, 0, 100_000),
        )
        async with client.get(last["url"]) as response:
            assert (response.status, response.content_length) == (200, 100_000)
            with pytest.raises(asyncio.TimeoutError):
                await response.read()
    await eventually(lambda: sandbox.bytes_sent(export_id) == 100_000)


async def test_ratemb_paces_the_body(sandbox, session, tag) -> None:
    export_id = f"{tag}-sizemb-4-ratemb-8"
    url = await first_url(session, sandbox, export_id)
    started = time.monotonic()

    status, data = await download(session, url)

    assert time.monotonic() - started >= 0.4  # 4 MiB at 8 MiB/s: about 0.5 s
    assert status == 200
    assert hashlib.sha256(data).hexdigest() == SandboxExportApi.file_sha256(
        export_id, 0, 4 * 1024 * 1024
    )


async def test_bytes_sent_counts_partial_then_full_downloads(sandbox, session, tag) -> None:
    export_id = f"{tag}-sizemb-16-ratemb-32"  # paced: closing early stops it well before the end
    size = 16 * 1024 * 1024
    url = await first_url(session, sandbox, export_id)

    async with session.get(url) as response:
        received = len(await response.content.readexactly(1024 * 1024))
        response.close()
    partial = await settled(lambda: sandbox.bytes_sent(export_id))
    status, data = await download(session, url)

    assert received <= partial < size // 2
    assert (status, len(data)) == (200, size)
    await eventually(lambda: sandbox.bytes_sent(export_id) == partial + size)


async def test_head_sends_headers_and_no_body(sandbox, session, tag) -> None:
    export_id = f"{tag}-size-4096"
    url = await first_url(session, sandbox, export_id)

    async with session.head(url) as response:
        status, length, data = (
            response.status,
            response.headers["Content-Length"],
            await response.read(),
        )

    assert (status, length, data) == (200, "4096", b"")
    assert sandbox.bytes_sent(export_id) == 0


# ---- where clients reach it (docker-compose binds 0.0.0.0, clients use a service name) ---


async def test_public_url_is_where_the_listing_sends_clients(session, tag) -> None:
    port = free_port()
    public = f"http://localhost:{port}"  # another name for the loopback it listens on
    with SandboxExportApi("127.0.0.1", port, public_url=f"{public}/") as sandbox:
        assert sandbox.base_url == public
        export_id = f"{tag}-files-2-size-300"
        _, body = await get_status(session, sandbox, export_id)
        urls = [entry["url"] for entry in body["downloadUrls"]]
        assert all(url.startswith(f"{public}/files/{export_id}/") for url in urls)

        # the service's download guard lets it through when the name is allowed, and only then
        refused = UrlPolicy.from_setting("")
        with pytest.raises(UnsafeUrl, match="loopback-address"):
            async with open_guarded_session(refused) as guarded:
                await download(guarded, urls[0])
        async with open_guarded_session(UrlPolicy.from_setting("localhost")) as guarded:
            assert await download(guarded, urls[1]) == (
                200,
                SandboxExportApi.file_bytes(export_id, 1, 300),
            )


def test_every_interface_without_a_public_url_hands_out_loopback() -> None:
    with SandboxExportApi("0.0.0.0", 0) as sandbox:
        assert sandbox.base_url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    "bad",
    ["sandbox-export-api:8081", "ftp://host", "http://", "http://host/path", "http://u:p@host"],
)
def test_a_public_url_is_scheme_host_and_port_only(bad: str) -> None:
    with pytest.raises(ValueError, match="public URL"):
        SandboxExportApi(public_url=bad)
    with pytest.raises(SystemExit) as exit_info:
        sandbox_main(["--public-url", bad])
    assert exit_info.value.code == 2
