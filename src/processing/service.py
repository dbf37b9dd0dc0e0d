"""Runs the driving side together: consumers and the admin API, until asked to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
import uvicorn

log = structlog.get_logger(__name__)


def hand_back_seconds(grace_seconds: float) -> float:
    """The last part of the grace period, kept for handing unfinished work back (messages
    visible again, leases released). The orchestrator's stop timeout (compose's
    stop_grace_period, ECS's stopTimeout) should be at least grace + this: the process
    exits within the grace, and the margin covers its last log lines and the API's close."""
    return min(10.0, grace_seconds / 4)


class Worker(Protocol):
    """A loop of the driving side (a consumer, the poller) that returns once `stop` is
    set and its in-flight work is finished or released."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


class Service:
    """SIGTERM/SIGINT stop the consumers from receiving; in-flight work gets most of
    `grace_seconds` to finish, the rest of it to hand back what did not; then the
    process returns, within `grace_seconds` of the signal."""

    def __init__(
        self,
        consumers: Sequence[Worker],
        *,
        api: Callable[[Callable[[], bool]], Any],
        host: str = "127.0.0.1",
        port: int = 3000,
        grace_seconds: float = 30.0,
    ) -> None:
        self._consumers = consumers
        self._api = api  # builds the admin API's ASGI app, given "is the service ready"
        self._host = host
        self._port = port
        self._grace = grace_seconds
        self.stop_event = asyncio.Event()
        self._ready = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        config = uvicorn.Config(
            self._api(lambda: self._ready),
            host=self._host,
            port=self._port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        api = asyncio.create_task(server._serve())
        workers = [asyncio.create_task(c.run(self.stop_event)) for c in self._consumers]
        self._ready = True
        log.info("service started", port=self._port, consumers=[c.name for c in self._consumers])
        await self.stop_event.wait()
        self._ready = False
        # The hand-back (messages visible again, leases released) happens inside the
        # grace period, so the orchestrator's stop timeout can be the grace plus a little.
        deadline = asyncio.get_running_loop().time() + self._grace
        hand_back = hand_back_seconds(self._grace)
        _done, pending = await asyncio.wait(workers, timeout=max(0.0, self._grace - hand_back))
        if pending:
            log.warning("grace period nearly over; handing unfinished work back")
            for task in pending:
                task.cancel()
            left = deadline - asyncio.get_running_loop().time()
            await asyncio.wait(pending, timeout=max(0.1, left))
        server.should_exit = True
        await api
        log.info("service stopped")

    def request_stop(self, reason: str = "requested") -> None:
        if not self.stop_event.is_set():
            log.info("stopping", reason=reason)
            self.stop_event.set()
