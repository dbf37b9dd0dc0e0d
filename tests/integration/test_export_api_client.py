"""AiohttpExportApi against the sandbox Export API over real HTTP: parsing, validation,
retries of 5xx and timeouts, no retry of 4xx, URL encoding of the export id."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from src.application.ports.export_api import (
    ExportApiRejected,
    ExportApiUnavailable,
    ExportState,
    MalformedExportResponse,
)
from src.infrastructure.http.export_api_client import AiohttpExportApi
from src.local.sandbox import MISSING_EXPORT_ID, SandboxExportApi
from src.local.stack import EmbeddedStack


@pytest.fixture
def sandbox(embedded_stack: EmbeddedStack) -> SandboxExportApi:
    return embedded_stack.sandbox


@pytest.fixture
def make_api(
    http_session: aiohttp.ClientSession, sandbox: SandboxExportApi
) -> Callable[..., AiohttpExportApi]:
    def make(
        *, max_retries: int = 3, timeout_seconds: float = 5.0, base_url: str | None = None
    ) -> AiohttpExportApi:
        return AiohttpExportApi(
            http_session,
            base_url or sandbox.base_url,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            backoff_seconds=0.01,
        )

    return make


async def test_ready_export_lists_files_with_size_and_checksum(make_api, sandbox, new_tag):
    export_id = f"{new_tag()}-files-3-size-2048-checksum"

    status = await make_api().get_export(export_id)

    assert status.export_id == export_id
    assert status.state is ExportState.READY
    assert status.error_message is None
    assert [f.file_name for f in status.files] == ["file-0.bin", "file-1.bin", "file-2.bin"]
    for index, file in enumerate(status.files):
        assert file.size == 2048
        assert file.sha256 == SandboxExportApi.file_sha256(export_id, index, 2048)
        # The presigned URL is kept whole: it is what downloads the file.
        assert file.url == sandbox.file_url(sandbox.plan(export_id), index)
        assert "X-Amz-Signature" in parse_qs(urlsplit(file.url).query)
    assert sandbox.poll_count(export_id) == 1


async def test_ready_export_without_checksums_has_no_size_or_sha256(make_api, new_tag) -> None:
    export_id = f"{new_tag()}-files-1"

    status = await make_api().get_export(export_id)

    [file] = status.files
    assert (file.file_name, file.size, file.sha256) == ("file-0.bin", None, None)


async def test_ready_without_download_urls_is_zero_files(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-files-0"

    status = await make_api().get_export(export_id)

    assert (status.state, status.files) == (ExportState.READY, ())


@pytest.mark.parametrize(
    ("keyword", "state", "message"),
    [
        ("failed", ExportState.FAILED, "Export generation failed in sandbox"),
        ("expired", ExportState.EXPIRED, "Export expired"),
    ],
)
async def test_failed_and_expired_carry_the_error_message(
    make_api, sandbox, new_tag, keyword, state, message
) -> None:
    export_id = f"{new_tag()}-{keyword}"

    status = await make_api().get_export(export_id)

    assert (status.state, status.error_message, status.files) == (state, message, ())
    assert sandbox.poll_count(export_id) == 1


async def test_processing_is_an_answer_not_a_retry(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-pending-1"

    first = await make_api().get_export(export_id)
    second = await make_api().get_export(export_id)

    assert (first.state, second.state) == (ExportState.PROCESSING, ExportState.READY)
    assert sandbox.poll_count(export_id) == 2


async def test_5xx_is_retried_until_an_answer(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-api500-2"

    status = await make_api(max_retries=3).get_export(export_id)

    assert status.state is ExportState.READY
    assert len(status.files) == 1
    assert sandbox.poll_count(export_id) == 3


async def test_5xx_beyond_the_retries_is_unavailable(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-api500-9"

    with pytest.raises(ExportApiUnavailable) as unavailable:
        await make_api(max_retries=2).get_export(export_id)

    assert str(unavailable.value) == "HTTP 500"
    assert unavailable.value.retryable
    assert sandbox.poll_count(export_id) == 3


async def test_404_is_rejected_at_once(make_api, sandbox) -> None:
    before = sandbox.poll_count(MISSING_EXPORT_ID)

    with pytest.raises(ExportApiRejected) as rejected:
        await make_api(max_retries=3).get_export(MISSING_EXPORT_ID)

    assert str(rejected.value) == "HTTP 404"
    assert not rejected.value.retryable
    assert sandbox.poll_count(MISSING_EXPORT_ID) - before == 1


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("notjson", "body: Invalid JSON"),
        ("array", "body: Input should be an object"),
        ("nostatus", "status: Field required"),
        ("badstatus", "status: Input should be 'pending', 'processing', 'ready'"),
        ("badurls", "downloadUrls: Input should be a valid array"),
        ("badentry", "downloadUrls.0.url: Field required"),
        ("numberid", "exportId: Input should be a valid string"),
    ],
)
async def test_malformed_bodies_say_what_was_wrong_without_urls(
    make_api, sandbox, new_tag, kind, what
) -> None:
    # files-2: well-formed parts of the body still carry presigned URLs.
    export_id = f"{new_tag()}-files-2-malformed-{kind}"

    with pytest.raises(MalformedExportResponse) as malformed:
        await make_api(max_retries=0).get_export(export_id)

    message = str(malformed.value)
    assert message.startswith("malformed response: ")
    assert what in message
    assert "?" not in message
    assert "X-Amz" not in message
    assert "http" not in message
    assert sandbox.poll_count(export_id) == 1


async def test_malformed_bodies_are_retried_as_documented(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-malformed-nostatus"

    with pytest.raises(MalformedExportResponse):
        await make_api(max_retries=1).get_export(export_id)

    assert sandbox.poll_count(export_id) == 2


async def test_a_hanging_request_times_out_and_the_retry_answers(
    make_api, sandbox, new_tag
) -> None:
    export_id = f"{new_tag()}-apihang-1"

    status = await make_api(timeout_seconds=0.3, max_retries=1).get_export(export_id)

    assert status.state is ExportState.READY
    assert sandbox.poll_count(export_id) == 2


async def test_hanging_beyond_the_retries_is_unavailable(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-apihang-2"

    with pytest.raises(ExportApiUnavailable) as unavailable:
        await make_api(timeout_seconds=0.2, max_retries=1).get_export(export_id)

    assert str(unavailable.value) == "timed out"
    assert sandbox.poll_count(export_id) == 2


async def test_connection_refused_is_unavailable(make_api, unused_tcp_port) -> None:
    api = make_api(max_retries=1, base_url=f"http://127.0.0.1:{unused_tcp_port}")

    with pytest.raises(ExportApiUnavailable) as unavailable:
        await api.get_export("anything")

    assert str(unavailable.value).startswith("connection failed (")


async def test_export_id_is_url_encoded_as_one_path_segment(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}/a b?c#d%2F-files-1-checksum"

    status = await make_api(max_retries=0).get_export(export_id)

    assert status.export_id == export_id
    assert status.state is ExportState.READY
    # The sandbox saw the whole id in its {exportId} segment, decoded back exactly.
    assert sandbox.poll_count(export_id) == 1
    [file] = status.files
    assert file.sha256 == SandboxExportApi.file_sha256(export_id, 0, 1024)


async def test_base_url_with_a_trailing_slash(make_api, sandbox, new_tag) -> None:
    export_id = f"{new_tag()}-files-1"

    status = await make_api(base_url=f"{sandbox.base_url}/").get_export(export_id)

    [file] = status.files
    assert (file.url, file.file_name) == (
        sandbox.file_url(sandbox.plan(export_id), 0),
        "file-0.bin",
    )
    assert file.expires_at is not None and file.expires_at.tzinfo is not None
    assert sandbox.poll_count(export_id) == 1
