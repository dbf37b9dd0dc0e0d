"""Periodic: a loop that runs rounds of a use case every tick until stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Periodic:
    """Holds no job state: schedules and leases are in DynamoDB, so a restarted or an
    additional replica simply picks up whatever is due.

    With `parallel_rounds` = 1, a round that reports a full batch (`work >= batch`) is
    followed at once by another one. With more, a new round may start every tick while
    earlier ones are still running (up to that many at once), so one slow call (an Export
    API that hangs until its timeout) does not hold up everything else that is due;
    rounds never take the same job, since each claims its jobs under a lease.

    While rounds find nothing, the tick doubles up to `idle_tick_seconds` (so an idle
    replica costs a few calls a minute); the first round that finds work, or a `wake`
    (this replica's intake has just scheduled a job), brings it back."""

    def __init__(
        self,
        name: str,
        round_: Callable[[], Awaitable[int]],
        *,
        tick_seconds: float,
        batch: int,
        parallel_rounds: int = 1,
        idle_tick_seconds: float | None = None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self._round = round_
        self._tick = tick_seconds
        self._idle_tick = max(tick_seconds, idle_tick_seconds or tick_seconds)
        self._idle_rounds = 0  # rounds in a row that found nothing
        self._wake = wake  # set by whoever just made work due here (e.g. intake)
        self._batch = batch
        self._parallel = max(1, parallel_rounds)
        self._running: set[asyncio.Task[int]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("periodic worker started", worker=self.name)
        try:
            while not stop.is_set():
                if len(self._running) < self._parallel:
                    task = asyncio.create_task(self._guarded())
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                work = await self._wait_for_round_or_tick(stop)
                if work < self._batch:
                    await self._sleep(stop)
            if self._running:
                await asyncio.wait(set(self._running))
        except asyncio.CancelledError:  # grace over: rounds stop; their leases run out
            for task in self._running:
                task.cancel()
            raise
        log.info("periodic worker stopped", worker=self.name)

    async def _wait_for_round_or_tick(self, stop: asyncio.Event) -> int:
        """One round at a time: wait for it and report its work. Several: go on at once
        (the tick paces new rounds) unless every slot is busy."""
        if self._parallel == 1 or len(self._running) >= self._parallel:
            done, _ = await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
            return max((t.result() for t in done), default=0)
        return 0

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until the next tick, or sooner when stopped or woken (a wake ends the idling)."""
        waits = [asyncio.ensure_future(stop.wait())]
        if self._wake is not None:
            waits.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(
                waits, timeout=self._next_tick(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in waits:
                waiting.cancel()
        if self._wake is not None and self._wake.is_set():
            self._wake.clear()
            self._idle_rounds = 0

    def _next_tick(self) -> float:
        backoff = 2.0 ** min(self._idle_rounds, 16)
        return min(self._tick * backoff, self._idle_tick)

    async def _guarded(self) -> int:
        try:
            work = await self._round()
        except Exception as err:  # the next round tries again; nothing is lost
            log.error("round failed", worker=self.name, error=type(err).__name__)
            return 0
        self._idle_rounds = 0 if work else self._idle_rounds + 1
        return work
