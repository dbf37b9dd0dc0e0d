"""Download safety end to end: AiohttpFileTransfer with the guarded session, a recording
fake resolver (names such as `evil.test` map to chosen addresses), a redirect server and
the sandbox on 127.0.0.1, and a spy on every socket connect in the process. Refused URLs
must fail without a single connection attempt; the spy also refuses any address other
than 127.0.0.1, so nothing ever leaves loopback even if the guard were broken."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from src.application.ports.file_transfer import TransferFailed
from src.infrastructure.http.file_transfer import AiohttpFileTransfer, TransferLimits
from src.infrastructure.http.url_guard import UrlPolicy, open_guarded_session
from src.local.provision import Resources
from src.local.sandbox import ExportPlan, SandboxExportApi
from src.local.stack import EmbeddedStack
from tests.integration.conftest import provision_for, service_client
from tests.integration.test_file_transfer import RecordingS3

SIGNED = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA&X-Amz-Signature=secret0123"
NAMES = {
    "evil.test": ["127.0.0.1"],
    "intranet.test": ["10.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "ecs-creds.test": ["169.254.170.2"],
    "v6loop.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "files.test": ["127.0.0.1"],
    "mixed.test": ["127.0.0.1", "10.0.0.1"],
    "nothing.test": [],
}


class FakeResolver(AbstractResolver):
    """Answers from NAMES and records every question."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in NAMES:
            raise socket.gaierror(socket.EAI_NONAME, "unknown test name")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in NAMES[host]
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every socket connect attempted in the process; anything but 127.0.0.1 is refused."""
    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect

    def spy(sock: socket.socket, address: Any) -> None:
        host, port = address[0], address[1]
        attempts.append((host, port))
        if host != "127.0.0.1":
            raise ConnectionRefusedError(f"test spy: {host} is not loopback")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    return attempts


@pytest.fixture(scope="module")
def resources(embedded_stack: EmbeddedStack) -> Resources:
    return provision_for(embedded_stack, "guard")


@pytest.fixture
async def recording_s3(embedded_stack: EmbeddedStack) -> AsyncIterator[RecordingS3]:
    async with service_client(embedded_stack, "s3") as client:
        yield RecordingS3(client)


@pytest.fixture
async def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
async def make_transfer(
    resolver: FakeResolver, recording_s3: RecordingS3, resources: Resources
) -> AsyncIterator[Callable[..., Any]]:
    """make(allowed, **limits) -> AiohttpFileTransfer under the policy `allowed` parses to
    (one guarded session per policy, all on the fake resolver)."""
    async with AsyncExitStack() as stack:
        sessions: dict[str, aiohttp.ClientSession] = {}

        async def make(allowed: str = "", **limits: Any) -> AiohttpFileTransfer:
            policy = UrlPolicy.from_setting(allowed)
            if allowed not in sessions:
                guarded = open_guarded_session(policy, resolver)
                sessions[allowed] = await stack.enter_async_context(guarded)
            settings = {"max_bytes": 1024 * 1024, "timeout_seconds": 10.0, **limits}
            return AiohttpFileTransfer(
                sessions[allowed],
                recording_s3,
                resources.bucket,
                TransferLimits(**settings),
                policy,
            )

        yield make


@pytest.fixture
async def redirector() -> AsyncIterator[tuple[str, dict[str, str], list[str]]]:
    """(base URL, Location per name, paths requested): GET /hop/{name} answers 302 with
    the Location set for it; /loop/{n} redirects to /loop/{n+1} for ever."""
    locations: dict[str, str] = {}
    requested: list[str] = []

    async def hop(request: web.Request) -> web.Response:
        requested.append(request.path)
        return web.Response(status=302, headers={"Location": locations[request.match_info["n"]]})

    async def loop(request: web.Request) -> web.Response:
        requested.append(request.path)
        following = int(request.match_info["n"]) + 1
        return web.Response(status=307, headers={"Location": f"/loop/{following}{SIGNED}"})

    app = web.Application()
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/loop/{n}", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", locations, requested
    finally:
        await runner.cleanup()


def sandbox_file(stack: EmbeddedStack, export_id: str, host: str | None = None) -> str:
    url = stack.sandbox.file_url(ExportPlan.parse(export_id), 0)
    return url if host is None else url.replace("127.0.0.1", host, 1)


def port_of(stack: EmbeddedStack) -> int:
    return int(stack.sandbox.base_url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("host", "rule", "resolved"),
    [
        ("127.0.0.1", "loopback-address", False),
        ("evil.test", "loopback-address", True),
        ("10.0.0.1", "private-address", False),
        ("intranet.test", "private-address", True),
        ("169.254.169.254", "metadata-address", False),
        ("metadata.test", "metadata-address", True),
        ("ecs-creds.test", "metadata-address", True),
        ("[fd00:ec2::254]", "metadata-address", False),
        ("[::1]", "loopback-address", False),
        ("v6loop.test", "loopback-address", True),
        ("[::ffff:127.0.0.1]", "loopback-address", False),
        ("mapped.test", "loopback-address", True),
        ("2130706433", "loopback-address", False),
        ("nothing.test", "unresolvable-host", True),
        ("no-such-name.test", "unresolvable-host", True),
    ],
)
async def test_unsafe_address_is_refused_without_connecting(
    make_transfer,
    resolver,
    connections,
    recording_s3,
    embedded_stack,
    new_tag,
    host,
    rule,
    resolved,
) -> None:
    export_id = f"{new_tag()}-size-100"
    url = sandbox_file(embedded_stack, export_id, host)
    transfer = await make_transfer()  # production default: nothing allowed

    with pytest.raises(TransferFailed) as failed:
        await transfer.transfer(url, f"exports/{export_id}/0_file-0.bin")

    assert failed.value.reason == f"refused by download policy: {rule}"
    assert not failed.value.retryable and failed.value.attempts == 1
    assert connections == []
    assert resolver.asked == ([host] if resolved else [])  # literals never reach DNS
    assert embedded_stack.sandbox.file_requests(export_id) == 0
    assert sum(recording_s3.calls.values()) == 0


async def test_allow_listed_sandbox_is_fetched_through_the_checked_address(
    make_transfer, resolver, connections, embedded_stack, new_tag
) -> None:
    export_id = f"{new_tag()}-size-3000"
    transfer = await make_transfer("127.0.0.1/32")

    by_literal = await transfer.transfer(sandbox_file(embedded_stack, export_id), "a/0.bin")
    by_name = await transfer.transfer(
        sandbox_file(embedded_stack, export_id, "files.test"), "a/1.bin"
    )

    expected = SandboxExportApi.file_sha256(export_id, 0, 3000)
    assert by_literal.sha256 == by_name.sha256 == expected
    assert resolver.asked == ["files.test"]
    assert ("127.0.0.1", port_of(embedded_stack)) in connections
    assert {host for host, _ in connections} == {"127.0.0.1"}


async def test_allow_listed_host_name_allows_its_addresses_but_not_the_literal(
    make_transfer, resolver, connections, embedded_stack, new_tag
) -> None:
    export_id = f"{new_tag()}-size-10"
    transfer = await make_transfer("files.test")

    result = await transfer.transfer(sandbox_file(embedded_stack, export_id, "files.test"), "b/0")
    with pytest.raises(TransferFailed) as failed:
        await transfer.transfer(sandbox_file(embedded_stack, export_id), "b/1")

    assert result.bytes == 10
    assert failed.value.reason == "refused by download policy: loopback-address"
    assert embedded_stack.sandbox.file_requests(export_id) == 1


async def test_one_refused_address_refuses_the_whole_host(
    make_transfer, resolver, connections, embedded_stack, new_tag
) -> None:
    export_id = f"{new_tag()}-size-10"
    transfer = await make_transfer("127.0.0.1/32")

    with pytest.raises(TransferFailed) as failed:
        await transfer.transfer(sandbox_file(embedded_stack, export_id, "mixed.test"), "c/0")

    assert failed.value.reason == "refused by download policy: private-address"
    assert resolver.asked == ["mixed.test"]
    assert connections == []


@pytest.mark.parametrize(
    ("location", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata-address"),
        ("http://metadata.test/latest/meta-data/", "metadata-address"),
        ("http://[::1]/admin", "loopback-address"),
        ("//10.0.0.1/scheme-relative", "private-address"),
        ("ftp://127.0.0.1/file.bin", "scheme-not-allowed"),
        ("file:///etc/passwd", "scheme-not-allowed"),
        ("http://user:pw@files.test/x", "userinfo-not-allowed"),
    ],
)
async def test_redirect_target_is_checked_before_connecting(
    make_transfer, resolver, connections, redirector, location, rule
) -> None:
    base, locations, requested = redirector
    locations["1"] = location
    transfer = await make_transfer("127.0.0.1/32")

    with pytest.raises(TransferFailed) as failed:
        await transfer.transfer(f"{base}/hop/1{SIGNED}", "d/0")

    assert failed.value.reason == f"refused by download policy: {rule}"
    assert not failed.value.retryable
    assert requested == ["/hop/1"]
    redirector_port = int(base.rsplit(":", 1)[1])
    assert set(connections) == {("127.0.0.1", redirector_port)}
    assert resolver.asked == (["metadata.test"] if "metadata.test" in location else [])


async def test_redirect_to_an_allowed_file_is_followed(
    make_transfer, connections, redirector, embedded_stack, new_tag
) -> None:
    base, locations, requested = redirector
    export_id = f"{new_tag()}-size-500"
    locations["1"] = f"{base}/hop/2"
    locations["2"] = sandbox_file(embedded_stack, export_id)
    transfer = await make_transfer("127.0.0.1/32")

    result = await transfer.transfer(f"{base}/hop/1", "e/0")

    assert result.sha256 == SandboxExportApi.file_sha256(export_id, 0, 500)
    assert requested == ["/hop/1", "/hop/2"]
    assert embedded_stack.sandbox.file_requests(export_id) == 1


@pytest.mark.parametrize("max_redirects", [0, 2, 5])
async def test_redirects_beyond_the_limit_are_refused(
    make_transfer, redirector, max_redirects
) -> None:
    base, _, requested = redirector
    transfer = await make_transfer("127.0.0.1/32", max_redirects=max_redirects)

    with pytest.raises(TransferFailed) as failed:
        await transfer.transfer(f"{base}/loop/0", "f/0")

    assert failed.value.reason == "refused by download policy: too-many-redirects"
    assert not failed.value.retryable
    assert requested == [f"/loop/{n}" for n in range(max_redirects + 1)]


async def test_refusals_keep_presigned_queries_out_of_reasons_and_logs(
    make_transfer, connections, redirector
) -> None:
    base, locations, _ = redirector
    locations["1"] = f"http://169.254.169.254/latest/meta-data/{SIGNED}"
    strict, sandbox_only = await make_transfer(), await make_transfer("127.0.0.1/32")
    attempts = [
        (strict, f"http://10.0.0.1/exports/file.csv{SIGNED}"),
        (strict, f"http://evil.test:8080/exports/file.csv{SIGNED}"),
        (sandbox_only, f"{base}/hop/1{SIGNED}"),
        (sandbox_only, f"{base}/loop/0{SIGNED}"),
    ]

    reasons = []
    with structlog.testing.capture_logs() as logs:
        for transfer, url in attempts:
            with pytest.raises(TransferFailed) as failed:
                await transfer.transfer(url, "g/0")
            reasons.append(failed.value.reason)
            reasons.append(str(failed.value))

    refusals = [entry for entry in logs if entry["event"] == "download refused"]
    assert len(refusals) == len(attempts)
    text = repr(logs) + repr(reasons)
    for secret in ("X-Amz-Signature", "X-Amz-Credential", "secret0123", "AKIA"):
        assert secret not in text
    assert refusals[0]["rule"] == "private-address"
    assert refusals[0]["url"] == "http://10.0.0.1/exports/file.csv?<redacted>"


async def test_session_is_closed_with_its_context() -> None:
    resolver = FakeResolver()
    async with open_guarded_session(UrlPolicy(), resolver) as session:
        assert not session.closed
    assert session.closed
    assert isinstance(session, aiohttp.ClientSession)
