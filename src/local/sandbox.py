"""A sandbox Export API and file server on loopback, standing in for the external services.

The export id describes the export it stands for: ``t1a2b-files-3-size-2048-fail-1`` is a
ready export of three 2 KiB files whose last file answers 404. See ``ExportPlan.parse`` for
the keyword grammar. File contents are deterministic, so tests can recompute them with
``SandboxExportApi.file_bytes`` / ``file_sha256`` (raw content) and ``served_bytes`` /
``served_sha256`` (what a GET serves: gzip-compressed under ``gzip``) without the server
keeping any state. The file server itself (ranges, validators, pacing) is in
``sandbox_files``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from src.local import sandbox_files as files
from src.local.sandbox_files import CHUNK_SIZE as CHUNK_SIZE
from src.local.sandbox_files import HANG_SECONDS as HANG_SECONDS
from src.local.sandbox_files import content_block as content_block
from src.local.sandbox_files import content_chunks as content_chunks
from src.local.sandbox_files import content_sha256 as content_sha256

MISSING_EXPORT_ID = "missing"
MALFORMED_KINDS = frozenset(
    {"notjson", "array", "nostatus", "badstatus", "badurls", "badentry", "numberid"}
)
_INT_KEYWORDS = frozenset(
    {
        *("files", "size", "sizemb", "fail", "failfirst", "flakyfile", "pending", "api500"),
        "apihang",
        *("filedelay", "urlttl", "hangfile", "ratemb"),
    }
)
_FLAG_KEYWORDS = frozenset(
    {
        *("failed", "expired", "neverready", "checksum", "badchecksum", "traversal"),
        *("norange", "changing", "gzip", "held"),
    }
)


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What the sandbox does for one export id; derived from the id alone."""

    export_id: str
    file_count: int = 1
    file_size: int = 1024
    failing_files: int = 0
    fail_first: int = 0  # the failing files fail only their first N GETs (0: all)
    flaky_requests: int = 0
    pending_polls: int = 0
    failed: bool = False
    expired: bool = False
    never_ready: bool = False
    checksums: bool = False
    bad_checksum: bool = False
    api_errors: int = 0
    api_hangs: int = 0
    malformed: str | None = None
    file_delay_ms: int = 0
    traversal: bool = False
    no_ranges: bool = False
    changing: bool = False
    gzip: bool = False
    url_ttl: int = 0
    hanging_files: int = 0
    rate_mib: int = 0
    held: bool = False

    @classmethod
    def parse(cls, export_id: str) -> ExportPlan:
        """Reads ``export_id.split("-")`` left to right; unknown tokens are ignored.

        Integer keywords take the next token when it is a non-negative integer (else they
        are ignored); ``malformed`` takes the next token when it is a known kind.

        Export: ``files-N`` (1), ``size-N`` bytes (1024) or ``sizemb-N``, ``pending-N`` polls
        answer processing, ``neverready``, ``failed``, ``expired``, ``api500-N`` / ``apihang-N``
        (the first N polls), ``malformed-KIND``, ``checksum`` (list fileSize and sha256),
        ``badchecksum`` (file 0's is wrong), ``traversal`` (file 0 is ``../../etc/passwd``),
        ``urlttl-N`` (URLs expire N s after each listing, then answer 403; 0: never),
        ``held`` (answers processing until ``SandboxExportApi.release`` or ``release_all``).
        Files: ``fail-N`` (the last N answer 404; with ``failfirst-K`` only to their first K
        GETs, so that a retry of them succeeds), ``flakyfile-N`` (each file's first N GETs
        answer 503), ``filedelay-N`` ms before each body, ``hangfile-N`` (the last N send
        headers, then hang), ``ratemb-N`` (bodies paced to N MiB/s), ``norange`` (Range is
        ignored, no Accept-Ranges), ``changing`` (ETag and Last-Modified new on every GET),
        ``gzip`` (each file served gzip-compressed with Content-Encoding gzip).
        """
        words = [word.lower() for word in export_id.split("-")]
        ints: dict[str, int] = {}
        flags: set[str] = set()
        malformed: str | None = None
        for position, word in enumerate(words):
            following = words[position + 1] if position + 1 < len(words) else ""
            if word in _INT_KEYWORDS and following.isdigit():
                ints[word] = int(following)
            elif word in _FLAG_KEYWORDS:
                flags.add(word)
            elif word == "malformed" and following in MALFORMED_KINDS:
                malformed = following
        file_size = ints.get("size", 1024)
        if "sizemb" in ints:
            file_size = ints["sizemb"] * 1024 * 1024
        return cls(
            export_id=export_id,
            file_count=ints.get("files", 1),
            file_size=file_size,
            failing_files=ints.get("fail", 0),
            fail_first=ints.get("failfirst", 0),
            flaky_requests=ints.get("flakyfile", 0),
            pending_polls=ints.get("pending", 0),
            failed="failed" in flags,
            expired="expired" in flags,
            never_ready="neverready" in flags,
            checksums="checksum" in flags or "badchecksum" in flags,
            bad_checksum="badchecksum" in flags,
            api_errors=ints.get("api500", 0),
            api_hangs=ints.get("apihang", 0),
            malformed=malformed,
            file_delay_ms=ints.get("filedelay", 0),
            traversal="traversal" in flags,
            no_ranges="norange" in flags,
            changing="changing" in flags,
            gzip="gzip" in flags,
            url_ttl=ints.get("urlttl", 0),
            hanging_files=ints.get("hangfile", 0),
            rate_mib=ints.get("ratemb", 0),
            held="held" in flags,
        )

    def failing_indices(self) -> range:
        """Indices of the files whose URLs answer 404: the last ``failing_files`` ones."""
        return range(max(0, self.file_count - self.failing_files), self.file_count)

    def hanging_indices(self) -> range:
        """Indices of the files that send headers and then hang: the last ``hanging_files``."""
        return range(max(0, self.file_count - self.hanging_files), self.file_count)

    def file_name(self, index: int) -> str:
        """The fileName listed for file ``index``."""
        if self.traversal and index == 0:
            return "../../etc/passwd"
        return f"file-{index}.bin"


def fake_signature(export_id: str, index: int, signed_at: str = "") -> str:
    """64 hex chars standing in for a presigned URL's signature (of its X-Amz-Date, if any)."""
    suffix = f":{signed_at}" if signed_at else ""
    return hashlib.sha256(f"signature:{export_id}:{index}{suffix}".encode()).hexdigest()


def iso_utc(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and Z, as the Export API writes timestamps."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Counters:
    """Thread-safe request counters: written on the server's loop, read by tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], int] = {}
        self._first_seen: dict[str, datetime] = {}

    def increment(self, *key: str, amount: int = 1) -> int:
        """Adds ``amount`` to ``key`` and returns the new count."""
        with self._lock:
            count = self._counts.get(key, 0) + amount
            self._counts[key] = count
            return count

    def get(self, *key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def first_seen(self, export_id: str) -> datetime:
        """When the export was first asked about: its createdAt."""
        with self._lock:
            return self._first_seen.setdefault(export_id, datetime.now(UTC))


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


EXPORT_FAILED_ERROR = error_body("EXPORT_GENERATION_FAILED", "Export generation failed in sandbox")
EXPORT_EXPIRED_ERROR = error_body("EXPORT_EXPIRED", "Export expired")


def listed_checksums(plan: ExportPlan) -> list[str]:
    """The checksum listed for each file: the sha256 of what a GET serves, except file 0's
    under badchecksum."""
    checksums = [files.served_sha256(plan, index) for index in range(plan.file_count)]
    if plan.bad_checksum and checksums:
        checksums[0] = hashlib.sha256(f"wrong:{plan.export_id}".encode()).hexdigest()
    return checksums


class SandboxExportApi:
    """Serves ``GET /exports/{exportId}`` and the export's files on a background thread.

    ``start()`` returns once the server listens; ``stop()`` ends in-flight requests (hangs
    and delays included) and joins the thread. Request counters stay readable after stop.

    ``public_url`` is where clients reach it (``http://sandbox-export-api:8081`` in
    docker-compose): its base URL and the file URLs it hands out use it instead of the
    bind address, which a client cannot use when it is every interface (``0.0.0.0``).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None
    ) -> None:
        self._host = host
        self._public_url = _checked_public_url(public_url) if public_url else None
        self._requested_port = port
        self._port: int | None = None
        self._counters = _Counters()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._fault: Callable[[], str | None] | None = None
        self.faults_injected = 0
        self._release_lock = threading.Lock()
        self._released: set[str] = set()
        self._all_released = False
        self._files = files.FileStreamer(self._counters.increment, self._stopped_within)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Starts listening; returns when requests can be made, raises if binding failed."""
        if self._thread is not None:
            raise RuntimeError("sandbox already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name="sandbox-export-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("sandbox Export API did not start within 10 s")
        if self._startup_error is not None:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError("sandbox Export API failed to start") from self._startup_error

    def stop(self) -> None:
        """Stops the server and joins its thread; safe to call twice."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            # RuntimeError: the loop already closed on its own.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=15)
        self._thread = None
        self._loop = None
        self._stopping = None

    def __enter__(self) -> SandboxExportApi:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start() if it happened while starting
            if not self._ready.is_set():
                self._startup_error = error
                self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/exports/{exportId}", self._export_status)
        app.router.add_get("/files/{exportId}/{index}/{fileName:.+}", self._file)
        return app

    # ---- what tests read -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Where clients reach the running server (the EXPORT_API_BASE_URL to use): the
        public URL if one was given, else ``http://host:port`` (127.0.0.1 for a server
        bound to every interface: an unspecified address is nowhere to connect to)."""
        if self._port is None:
            raise RuntimeError("sandbox not started")
        if self._public_url is not None:
            return self._public_url
        host = "127.0.0.1" if self._host in _EVERY_INTERFACE else self._host
        return f"http://{host}:{self._port}"

    def poll_count(self, export_id: str) -> int:
        """How many ``GET /exports/{export_id}`` requests were received (any answer)."""
        return self._counters.get("poll", export_id)

    def file_requests(self, export_id: str) -> int:
        """How many file GETs were received for this export, over all of its files."""
        return self._counters.get("files", export_id)

    def bytes_sent(self, export_id: str) -> int:
        """File body bytes written for this export over all requests (error bodies aside);
        counted after each write, so a dropped connection counts what was sent."""
        return self._counters.get("bytes", export_id)

    def expired_refusals(self, export_id: str) -> int:
        """How many file GETs were refused with 403 because their URL had expired (or, under
        ``urlttl``, did not say when it expires)."""
        return self._counters.get("expired", export_id)

    def range_requests(self, export_id: str) -> int:
        """How many file GETs carried a Range header and got a 206."""
        return self._counters.get("ranges", export_id)

    def release(self, export_id: str) -> None:
        """A ``held`` export answers as if it were not held from now on (thread-safe)."""
        with self._release_lock:
            self._released.add(export_id)

    def release_all(self) -> None:
        """Every ``held`` export, asked about already or not, is released (thread-safe)."""
        with self._release_lock:
            self._all_released = True

    def is_held(self, export_id: str) -> bool:
        """True while a ``held`` export still answers processing."""
        if not ExportPlan.parse(export_id).held:
            return False
        with self._release_lock:
            return not self._all_released and export_id not in self._released

    def plan(self, export_id: str) -> ExportPlan:
        """What the sandbox does for ``export_id``."""
        return ExportPlan.parse(export_id)

    def file_url(self, plan: ExportPlan, index: int, issued: datetime | None = None) -> str:
        """The presigned-looking URL listed for file ``index``. Under ``urlttl`` it carries
        X-Amz-Date (``issued``, default now, rounded up to the second) and X-Amz-Expires."""
        path = "/".join(
            quote(part, safe="") for part in (plan.export_id, str(index), plan.file_name(index))
        )
        query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SANDBOX&"
        signed_at = ""
        if plan.url_ttl:
            signed = files.presign_time(issued or datetime.now(UTC))
            signed_at = signed.strftime(files.AMZ_DATE_FORMAT)
            query += files.expiry_query(signed, plan.url_ttl) + "&"
        query += f"X-Amz-Signature={fake_signature(plan.export_id, index, signed_at)}"
        return f"{self.base_url}/files/{path}?{query}"

    @staticmethod
    def file_bytes(export_id: str, index: int, size: int) -> bytes:
        """A file's raw content (what is served, except under gzip); built in memory, so for
        small files."""
        return b"".join(content_chunks(export_id, index, size))

    @staticmethod
    def file_sha256(export_id: str, index: int, size: int) -> str:
        """sha256 hex of a file's raw content, computed by streaming."""
        return content_sha256(export_id, index, size)

    @staticmethod
    def served_bytes(export_id: str, index: int, size: int) -> bytes:
        """Exactly what a full GET of the file serves (gzip-compressed under ``gzip``); built
        in memory, so for small files."""
        plan = dataclasses.replace(ExportPlan.parse(export_id), file_size=size)
        return b"".join(files.served_chunks(plan, index, range(files.served_size(plan, index))))

    @staticmethod
    def served_sha256(export_id: str, index: int, size: int) -> str:
        """sha256 hex of what a full GET of the file serves."""
        plan = dataclasses.replace(ExportPlan.parse(export_id), file_size=size)
        return files.served_sha256(plan, index)

    # ---- handlers --------------------------------------------------------------------

    def set_fault(self, fault: Callable[[], str | None] | None, hang_seconds: float = 5.0) -> None:
        """Fault injection for every status call: `fault()` returns "500", "hang" or None.
        A hang lasts `hang_seconds` (longer than the client's timeout) then answers 503."""
        self._fault = fault
        self._hang_seconds = hang_seconds

    async def _injected(self) -> web.StreamResponse | None:
        kind = self._fault() if self._fault is not None else None
        if kind is None:
            return None
        self.faults_injected += 1
        if kind == "hang":
            await self._stopped_within(self._hang_seconds)
            return web.Response(status=503, text="sandbox hung")
        return web.Response(status=500, text="Internal Server Error (injected)")

    async def _export_status(self, request: web.Request) -> web.StreamResponse:
        export_id = request.match_info["exportId"]
        poll = self._counters.increment("poll", export_id)
        injected = await self._injected()
        if injected is not None:
            return injected
        if export_id == MISSING_EXPORT_ID:
            return web.json_response({"message": "export not found"}, status=404)
        plan = ExportPlan.parse(export_id)
        if poll <= plan.api_hangs and await self._stopped_within(HANG_SECONDS):
            return web.Response(status=503, text="sandbox stopping")
        if poll <= plan.api_errors:
            return web.Response(status=500, text="Internal Server Error (sandbox)")
        if plan.malformed == "notjson":
            return web.Response(text="<html>oops", content_type="text/html")
        if plan.malformed == "array":
            return web.json_response([])
        body = await self._status_body(plan, poll)
        return web.json_response(malform(body, plan.malformed))

    async def _status_body(self, plan: ExportPlan, poll: int) -> dict[str, Any]:
        created = self._counters.first_seen(plan.export_id)
        now = datetime.now(UTC)
        body: dict[str, Any] = {"exportId": plan.export_id, "createdAt": iso_utc(created)}
        if plan.failed:
            body.update(status="failed", error=EXPORT_FAILED_ERROR, completedAt=iso_utc(now))
        elif plan.expired:
            body.update(status="expired", error=EXPORT_EXPIRED_ERROR, expiresAt=iso_utc(now))
        elif plan.never_ready or poll <= plan.pending_polls or self.is_held(plan.export_id):
            body.update(status="processing")
        else:
            body.update(status="ready", completedAt=iso_utc(now))
            body["expiresAt"] = iso_utc(created + timedelta(days=7))
            if plan.file_count > 0:
                body["downloadUrls"] = await self._download_urls(plan, now)
        return body

    async def _download_urls(self, plan: ExportPlan, now: datetime) -> list[dict[str, Any]]:
        expires_at = iso_utc(now + timedelta(hours=1))
        if plan.url_ttl:
            expires_at = iso_utc(files.presign_time(now) + timedelta(seconds=plan.url_ttl))
        entries: list[dict[str, Any]] = [
            {
                "url": self.file_url(plan, index, now),
                "fileName": plan.file_name(index),
                "expiresAt": expires_at,
            }
            for index in range(plan.file_count)
        ]
        if plan.checksums:
            # Hashing large files takes a while: keep it off the event loop.
            checksums = await asyncio.to_thread(listed_checksums, plan)
            for index, (entry, checksum) in enumerate(zip(entries, checksums, strict=True)):
                entry.update(fileSize=files.served_size(plan, index), checksum=checksum)
        return entries

    async def _file(self, request: web.Request) -> web.StreamResponse:
        export_id = request.match_info["exportId"]
        index_text = request.match_info["index"]
        self._counters.increment("files", export_id)
        attempt = self._counters.increment("file", export_id, index_text)
        plan = ExportPlan.parse(export_id)
        if not index_text.isdigit() or int(index_text) >= plan.file_count:
            return web.json_response({"message": "file not found"}, status=404)
        index = int(index_text)
        refusal = self._refuse_if_expired(request, plan) if plan.url_ttl else None
        if refusal is not None:
            return refusal
        if index in plan.failing_indices() and (not plan.fail_first or attempt <= plan.fail_first):
            return web.json_response({"message": "file not found"}, status=404)
        if attempt <= plan.flaky_requests:
            return web.Response(status=503, text="Service Unavailable (sandbox)")
        served = files.ServedFile(plan, index, attempt, self._counters.first_seen(export_id))
        return await self._files.respond(request, served)

    def _refuse_if_expired(self, request: web.Request, plan: ExportPlan) -> web.Response | None:
        """S3's 403 when the URL's X-Amz-Date + X-Amz-Expires has passed (or is missing)."""
        now = datetime.now(UTC)
        expiry = files.url_expiry(request.query)
        if expiry is not None and now < expiry:
            return None
        self._counters.increment("expired", plan.export_id)
        return files.expired_response(expiry, now)

    async def _stopped_within(self, seconds: float) -> bool:
        """Waits up to ``seconds``; True as soon as the server starts stopping."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True


_EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})


def _checked_public_url(url: str) -> str:
    """``scheme://host[:port]``, no trailing slash; anything else is a ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"public URL must be http(s)://host[:port], got {url!r}")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"public URL takes no path, query or credentials, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def malform(body: dict[str, Any], kind: str | None) -> dict[str, Any]:
    """Breaks a well-formed status body the way ``malformed KIND`` asks (None: unchanged)."""
    broken = dict(body)
    if kind == "nostatus":
        broken.pop("status", None)
    elif kind == "badstatus":
        broken["status"] = "done"
    elif kind == "badurls":
        broken.update(status="ready", downloadUrls="https://example.invalid/file-0.bin")
    elif kind == "badentry":
        broken.update(status="ready", downloadUrls=[{"fileName": "file-0.bin"}])
    elif kind == "numberid":
        broken["exportId"] = 12345
    return broken


def main(argv: list[str] | None = None) -> None:
    """Runs the sandbox in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Sandbox Export API and file server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--public-url",
        help="where clients reach it, e.g. http://sandbox-export-api:8081 (default: the "
        "bind address); the file URLs it hands out use it",
    )
    args = parser.parse_args(argv)
    try:
        sandbox = SandboxExportApi(args.host, args.port, public_url=args.public_url)
    except ValueError as err:
        parser.error(str(err))
    with sandbox:
        print(
            f"Sandbox Export API listening on {args.host}:{args.port}, "
            f"reached at {sandbox.base_url}",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
