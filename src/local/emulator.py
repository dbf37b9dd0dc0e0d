"""In-process AWS emulator: a moto server on a free loopback port.

Used by ``serve --embedded``, ``demo`` and the tests; never by production code paths.

Fidelity fixes and test hooks live in :class:`_Middleware`, wrapped around moto's WSGI app:

* moto serves every request on its own thread and does not lock its DynamoDB backend, so
  concurrent ``UpdateItem ... ADD`` calls lose increments and condition checks interleave.
  Real DynamoDB applies each item write atomically, so DynamoDB requests are serialised with
  one lock: tests of exactly-once behaviour then test our code, not the emulator's races.
* Every request is counted by operation (``calls``), and an optional fault predicate can
  answer JSON-protocol requests with a ``ThrottlingException`` (``set_fault``).
* DynamoDB writes are billed per caller as AWS would bill them (bytes and write units by
  table and index, ``writes_by``; see ``dynamodb_writes``).

moto's TransactWriteItems deep-copies every table it writes to, per transaction; the
patched emulator keeps only the items it names (``moto_transactions``), same results.
Its Query and Scan sort the whole table with a cast per comparison, and it lists its own
package directory for every request; the patched emulator casts each key once and lists
once (``moto_costs``), same results.

Three moto Step Functions gaps are patched in place (see ``_patch_moto``): ``SendTaskFailure``
lost its cause, a token of an ended execution answered ``InvalidToken`` where AWS answers
``TaskTimedOut``; and a just-started execution, RUNNING before its worker thread built
its environment, broke every callback looked up after it, and executions parsing their
definitions at once shared one list and failed (``moto_executions``). The patches are
process-global and cannot be undone:
``EmbeddedAws(patch_stepfunctions=False)`` (plain moto, which the service must also survive)
refuses to start in a process that applied them, and they are refused while a plain emulator
runs. Tests get plain moto from a child process: ``python -m src.local.emulator --plain``
(see ``main``) prints ``EMULATOR READY <endpoint_url>`` and serves until SIGTERM/SIGINT.

moto's Step Functions interpreter calls SQS (``sqs:sendMessage.waitForTaskToken``) through
``http://localhost:$MOTO_PORT``, so ``start`` sets ``MOTO_PORT``: one running emulator per
process (moto's backends are process-global anyway).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from werkzeug.serving import BaseWSGIServer, make_server

from src.local.dynamodb_reads import READ_OPERATIONS, ReadLedger
from src.local.dynamodb_writes import WRITE_OPERATIONS, WriteLedger

_log = logging.getLogger(__name__)

FaultPredicate = Callable[[str], bool]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_DYNAMODB_TARGET_PREFIX = "DynamoDB_"
_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_PEEK = 1024 * 1024


def _operation_of(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """Return ``(operation, x_amz_target)`` for a request; the operation may be unknown.

    JSON protocols name the operation in ``X-Amz-Target`` (``AWSStepFunctions.SendTaskSuccess``,
    ``DynamoDB_20120810.PutItem``, ``AmazonSQS.ReceiveMessage``). Query protocols carry an
    ``Action`` in the query string or the form body; the body is read and put back. REST
    protocols (S3) are not identified.
    """
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1], target
    action = parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    if action:
        return action[0], None
    content_type = environ.get("CONTENT_TYPE", "")
    if environ.get("REQUEST_METHOD") == "POST" and content_type.startswith(_FORM_CONTENT_TYPE):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if 0 < length <= _MAX_FORM_PEEK:
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            action = parse_qs(body.decode("utf-8", "replace")).get("Action")
            if action:
                return action[0], None
    return None, None


_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def _caller_of(environ: dict[str, Any]) -> str:
    """The access key id a request was signed with ('' when unsigned)."""
    found = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found.group(1) if found else ""


_patched = False
_plain_running = 0  # started EmbeddedAws(patch_stepfunctions=False), not stopped yet
_patch_lock = threading.Lock()

_ALREADY_PATCHED = (
    "moto's Step Functions patches are already applied in this process and cannot be undone: "
    "EmbeddedAws(patch_stepfunctions=False) would not be plain moto. Run plain moto in another "
    "process (python -m src.local.emulator --plain)."
)


def _claim_plain() -> None:
    """Register a starting plain emulator; refuse if the patches are in."""
    global _plain_running
    with _patch_lock:
        if _patched:
            raise RuntimeError(_ALREADY_PATCHED)
        _plain_running += 1


def _release_plain() -> None:
    global _plain_running
    with _patch_lock:
        _plain_running -= 1


def _patch_moto() -> None:
    """Fix moto fidelity gaps in place (once per process; moto is process-global anyway).

    * ``SendTaskFailure``: moto's response handler passes only ``error`` to the backend, so
      the execution's failure cause was always null. The interpreter's backend takes a cause.
    * A token whose execution has ended (timed out, failed, succeeded) makes moto answer
      ``InvalidToken``; AWS answers ``TaskTimedOut`` ("Provided task does not exist anymore"),
      which the service reads as "the workflow gave up". Known tokens get ``TaskTimedOut``;
      unknown ones keep ``InvalidToken``.
    """
    global _patched
    with _patch_lock:
        if _patched:
            return
        if _plain_running:
            raise RuntimeError(
                "a plain-moto EmbeddedAws (patch_stepfunctions=False) is running in this "
                "process: applying moto's Step Functions patches would change it under its users"
            )
        from moto.core.exceptions import AWSError
        from moto.core.responses import EmptyResult
        from moto.stepfunctions.parser.api import ExecutionStatus, InvalidToken
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend
        from moto.stepfunctions.responses import StepFunctionResponse

        def send_task_failure(self: Any) -> Any:
            backend = self.stepfunction_backend
            kwargs: dict[str, Any] = {"error": self._get_param("error")}
            cause = self._get_param("cause")
            if cause is not None and isinstance(backend, StepFunctionsParserBackend):
                kwargs["cause"] = cause
            backend.send_task_failure(self._get_param("taskToken"), **kwargs)
            return EmptyResult()

        def token_of_ended_execution(backend: Any, token: str) -> bool:
            for execution in backend._get_executions():
                if execution.status == ExecutionStatus.RUNNING:
                    continue
                worker = getattr(execution, "exec_worker", None)
                env = getattr(worker, "env", None)
                pool = getattr(env, "callback_pool_manager", None)
                if pool is not None and pool.get(token) is not None:
                    return True
            return False

        def ended_is_timed_out(original: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(original)
            def method(self: Any, task_token: str, *args: Any, **kwargs: Any) -> Any:
                try:
                    return original(self, task_token, *args, **kwargs)
                except InvalidToken:
                    if token_of_ended_execution(self, task_token):
                        raise AWSError(
                            "Task Timed Out: 'Provided task does not exist anymore'",
                            exception_type="TaskTimedOut",
                        ) from None
                    raise

            return method

        from src.local import moto_costs, moto_executions, moto_nested_executions, moto_transactions

        moto_transactions.apply()  # not a fidelity fix: moto's cost per transaction
        moto_costs.apply()  # nor these: moto's costs per Query and per request
        moto_executions.apply()  # an execution can be called back once it is RUNNING
        moto_nested_executions.apply()  # states:startExecution(.sync:2) can start a child
        StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]
        for name in ("send_task_success", "send_task_failure", "send_task_heartbeat"):
            original = getattr(StepFunctionsParserBackend, name)
            setattr(StepFunctionsParserBackend, name, ended_is_timed_out(original))
        _patched = True


def _keep_alive(handler: type[Any]) -> type[Any]:
    """HTTP/1.1 keep-alive, as AWS endpoints and every SDK use it. werkzeug closes each
    connection because http.server cannot skip a request body the app left unread; here
    the body is read first (by Content-Length) and handed to the app from memory, so the
    connection is always at the next request line. A chunked request body still closes
    its connection. Without this every call of the service opened a TCP connection, which
    was about an eighth of its CPU in the small-files bench."""

    class KeepAlive(handler):  # type: ignore[misc]
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY: a response goes out as two writes (headers, then body); with Nagle
        # on, the body waits for the client's delayed ACK of the headers, 40 ms on Linux,
        # on every call of a kept-alive connection (a closed one flushed at once).
        disable_nagle_algorithm = True
        _closing = False

        def run_wsgi(self) -> None:
            length = self.headers.get("Content-Length")
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            if chunked or (length is None and self.command in ("POST", "PUT", "PATCH")):
                self._closing = True
                super().run_wsgi()
                return
            original: Any = getattr(self, "rfile")  # noqa: B009 (typed by http.server only)
            self.rfile = io.BytesIO(original.read(int(length)) if length else b"")
            try:
                super().run_wsgi()
            finally:
                self.rfile = original

        def send_header(self, keyword: str, value: str) -> None:
            if keyword.lower() == "connection" and value.lower() == "close" and not self._closing:
                return  # keep it open: the request was read to its end
            super().send_header(keyword, value)

    return KeepAlive


class _Middleware:
    """Counts operations, serialises DynamoDB, injects faults."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._counts: Counter[str] = Counter()
        self._by_caller: Counter[tuple[str, str]] = Counter()  # (access key, operation)
        # CPU seconds this process spent handling them (the request's thread, moto's work
        # and the write and read accounting; not the HTTP server's reading and writing),
        # and how many requests that is: both added when a request ends, and only if it
        # began after the last reset (a long poll open across a reset counts for neither).
        self._cpu_by_caller: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._moto_cpu_by_caller: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._cpu_calls: Counter[tuple[str, str]] = Counter()
        self._generation = 0  # reset() moves it on
        self._faults = 0
        self._counts_lock = threading.Lock()
        self._dynamodb_lock = threading.Lock()
        self.fault: FaultPredicate | None = None
        self.writes = WriteLedger()  # DynamoDB write volume per caller, as AWS bills it
        self.reads = ReadLedger()  # Query / Scan items read (ScannedCount) per caller

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        operation, target = _operation_of(environ)
        caller = _caller_of(environ)
        with self._counts_lock:
            generation = self._generation
            if operation is not None:
                self._counts[operation] += 1
                if target is not None:
                    self._counts[target] += 1
            named = target or operation or f"S3.{environ.get('REQUEST_METHOD', '?')}"
            self._by_caller[(caller, named)] += 1

        fault = self.fault
        if target is not None and operation is not None and fault is not None and fault(operation):
            with self._counts_lock:
                self._faults += 1
            return self._throttle(start_response)

        in_moto = [0.0]  # of it, CPU seconds inside moto (the rest is the accounting)

        def timed(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            began = time.thread_time()
            try:
                return self._app(environ, start_response)
            finally:
                in_moto[0] += time.thread_time() - began

        started = time.thread_time()
        try:
            return self._handle(timed, environ, start_response, operation, target, caller)
        finally:
            spent = time.thread_time() - started
            with self._counts_lock:
                if generation == self._generation:
                    key = (caller, named)
                    self._cpu_by_caller[key] += spent
                    self._moto_cpu_by_caller[key] += in_moto[0]
                    self._cpu_calls[key] += 1

    def _handle(
        self,
        app: WsgiApp,
        environ: dict[str, Any],
        start_response: StartResponse,
        operation: str | None,
        target: str | None,
        caller: str,
    ) -> Iterable[bytes]:
        """The request through moto (`app`). moto builds each response before returning it,
        so the timers above cover its work; the HTTP server writes it out afterwards."""
        if target is not None and target.startswith(_DYNAMODB_TARGET_PREFIX):
            with self._dynamodb_lock:
                # Consume the whole response inside the lock: the write is finished before
                # the next DynamoDB request starts, like one atomic item write in AWS.
                if operation in WRITE_OPERATIONS:
                    return self.writes.run(operation, environ, caller, app, start_response)
                if operation in READ_OPERATIONS:
                    return self.reads.run(operation, environ, caller, app, start_response)
                return list(app(environ, start_response))
        return app(environ, start_response)

    @staticmethod
    def _throttle(start_response: StartResponse) -> list[bytes]:
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("Content-Length", str(len(body))),
                ("x-amzn-ErrorType", "ThrottlingException"),
                ("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000"),
            ],
        )
        return [body]

    def calls(self, operation: str) -> int:
        with self._counts_lock:
            return self._counts[operation]

    def calls_by(self, caller: str) -> dict[str, int]:
        with self._counts_lock:
            return {op: n for (who, op), n in self._by_caller.items() if who == caller}

    def cpu_by(self, caller: str) -> dict[str, dict[str, float]]:
        with self._counts_lock:
            return {
                op: {
                    "seconds": seconds,
                    "moto_seconds": self._moto_cpu_by_caller[(who, op)],
                    "calls": self._cpu_calls[(who, op)],
                }
                for (who, op), seconds in self._cpu_by_caller.items()
                if who == caller
            }

    @property
    def faults(self) -> int:
        with self._counts_lock:
            return self._faults

    def reset(self) -> None:
        with self._counts_lock:
            self._counts.clear()
            self._by_caller.clear()
            self._cpu_by_caller.clear()
            self._moto_cpu_by_caller.clear()
            self._cpu_calls.clear()
            self._generation += 1
            self._faults = 0
        self.writes.reset()
        self.reads.reset()


class EmbeddedAws:
    """In-process AWS emulator (moto server) on a free 127.0.0.1 port.

    ``port=0`` picks a free port. ``start`` turns Step Functions execution on and points
    ``MOTO_PORT`` at this server (restored by ``stop``). Usable as a context manager.

    ``patch_stepfunctions=False`` leaves moto's Step Functions as released (the DynamoDB lock,
    call counters and fault hook stay: they are not Step Functions patches). The patches are
    process-global, so this raises ``RuntimeError`` in a process that already applied them.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, patch_stepfunctions: bool = True
    ) -> None:
        if not patch_stepfunctions and _patched:
            raise RuntimeError(_ALREADY_PATCHED)
        self._host = host
        self._port = port
        self._patch_stepfunctions = patch_stepfunctions
        self._plain_claimed = False
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._middleware: _Middleware | None = None
        self._previous_moto_port: str | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("EmbeddedAws is not started")
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def patch_stepfunctions(self) -> bool:
        return self._patch_stepfunctions

    def start(self) -> None:
        if self._server is not None:
            return
        # Imported here: moto is the optional "embedded" dependency group.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # The interpreter logs every failed execution at ERROR with its whole state
        # (a workflow taking its Catch is normal here): keep that out of the console.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        if self._patch_stepfunctions:
            _patch_moto()
        else:
            _claim_plain()
            self._plain_claimed = True
        self._middleware = _Middleware(DomainDispatcherApplication(create_backend_app))
        # Binding port 0 here reserves the free port at once (no pick-then-bind race); the
        # port is known, and MOTO_PORT set, before the server serves its first request.
        try:
            server = make_server(
                self._host,
                self._port,
                self._middleware,
                threaded=True,
                request_handler=_keep_alive(MotoRequestHandler),
            )
        except BaseException:
            self._unclaim_plain()
            raise
        self._server = server
        self._previous_moto_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(self.port)
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"moto-server-{self.port}", daemon=True
        )
        self._thread.start()
        try:
            self._configure({"stepfunctions": {"execute_state_machine": True}})
        except Exception:
            self.stop()
            raise
        _log.info(
            "embedded AWS emulator listening on %s (%s)",
            self.endpoint_url,
            "Step Functions patched" if self._patch_stepfunctions else "plain moto",
        )

    def _configure(self, config: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback http endpoint
            f"{self.endpoint_url}/moto-api/config",
            data=json.dumps(config).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._server = None
        self._thread = None
        if self._previous_moto_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._previous_moto_port
        self._unclaim_plain()

    def _unclaim_plain(self) -> None:
        if self._plain_claimed:
            self._plain_claimed = False
            _release_plain()

    def calls(self, operation: str) -> int:
        """Requests received for an operation, faulted ones included.

        ``operation`` is the bare name (``"SendTaskSuccess"``, ``"PutItem"``,
        ``"ReceiveMessage"``) or the full ``X-Amz-Target`` (``"AWSStepFunctions.SendTaskSuccess"``).
        The bare name sums every service with that operation. S3 (REST) is not counted.
        """
        return self._require_middleware().calls(operation)

    def calls_by(self, caller: str) -> dict[str, int]:
        """Requests signed with access key `caller`, by operation: the full X-Amz-Target
        (``DynamoDB_20120810.GetItem``), a query protocol's Action, or ``S3.<METHOD>``."""
        return self._require_middleware().calls_by(caller)

    def cpu_by(self, caller: str) -> dict[str, dict[str, float]]:
        """CPU this process spent handling `caller`'s requests, by operation (named as in
        `calls_by`): ``{"seconds", "moto_seconds", "calls"}``: moto's work and the write
        and read accounting (``moto_seconds``: moto's alone), measured on the request's
        thread (`time.thread_time`), without the HTTP server's reading and writing; counted
        when a request ends, for requests begun since the last reset (so `calls` may differ
        from `calls_by`'s, which counts them as they arrive)."""
        return self._require_middleware().cpu_by(caller)

    def writes_by(self, caller: str) -> dict[str, dict[str, int]]:
        """DynamoDB writes signed with access key `caller`, as AWS bills them, by table
        (and ``"<table>/<index>"`` for secondary indexes): ``{"items", "bytes",
        "write_units", "failed"}``; see ``src.local.dynamodb_writes``."""
        return self._require_middleware().writes.by(caller)

    @property
    def writes_unaccounted(self) -> int:
        """DynamoDB write requests passed through without billing (not looked up)."""
        return self._require_middleware().writes.unaccounted

    @property
    def faults(self) -> int:
        """Requests answered by the fault hook."""
        return self._require_middleware().faults

    def reads_by(self, caller: str) -> dict[str, dict[str, int]]:
        """DynamoDB Query and Scan calls signed with access key `caller`, by operation:
        ``{"calls", "items" (ScannedCount summed), "max_items" (the largest of one call),
        "returned" (Count summed)}``; see ``src.local.dynamodb_reads``."""
        return self._require_middleware().reads.by(caller)

    def reads_by_source(self, caller: str) -> dict[str, dict[str, int]]:
        """`reads_by` keyed ``"<operation> <table>[/<index>]"``."""
        return self._require_middleware().reads.by_source(caller)

    def reset_calls(self) -> None:
        self._require_middleware().reset()

    def set_fault(self, predicate: FaultPredicate | None) -> None:
        """Answer JSON-protocol requests whose operation matches with a ThrottlingException.

        Only requests carrying ``X-Amz-Target`` (DynamoDB, Step Functions, SQS JSON) are
        faulted; ``None`` switches the hook off.
        """
        self._require_middleware().fault = predicate

    def _require_middleware(self) -> _Middleware:
        if self._middleware is None:
            raise RuntimeError("EmbeddedAws is not started")
        return self._middleware

    def __enter__(self) -> EmbeddedAws:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


READY_PREFIX = "EMULATOR READY "


def main(argv: list[str] | None = None) -> int:
    """``python -m src.local.emulator [--host H] [--port P] [--plain]``.

    Starts the emulator, prints one line ``EMULATOR READY <endpoint_url>`` (flushed) and
    serves until SIGTERM or SIGINT, then stops. ``--plain``: moto without our Step Functions
    patches (tests prove the service on it from their own, patched, process).
    """
    import argparse

    parser = argparse.ArgumentParser(description="Run the AWS emulator (moto server).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--plain", action="store_true", help="plain moto: no Step Functions patches"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with EmbeddedAws(args.host, args.port, patch_stepfunctions=not args.plain) as emulator:
            sys.stdout.write(f"{READY_PREFIX}{emulator.endpoint_url}\n")
            sys.stdout.flush()
            # A timeout keeps the main thread waking up, so the handler always gets to run.
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
