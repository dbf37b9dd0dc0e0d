"""Periodic: a loop that runs one round of a use case every tick until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Periodic:
    """Holds no job state: schedules and leases are in DynamoDB, so a restarted or an
    additional replica simply picks up whatever is due. A round that reports a full
    batch (`work >= batch`) is followed at once by another one."""

    def __init__(
        self,
        name: str,
        round_: Callable[[], Awaitable[int]],
        *,
        tick_seconds: float,
        batch: int,
    ) -> None:
        self.name = name
        self._round = round_
        self._tick = tick_seconds
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        log.info("periodic worker started", worker=self.name)
        while not stop.is_set():
            work = 0
            try:
                work = await self._round()
            except Exception as err:  # the next round tries again; nothing is lost
                log.error("round failed", worker=self.name, error=type(err).__name__)
            if work < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._tick)
        log.info("periodic worker stopped", worker=self.name)
