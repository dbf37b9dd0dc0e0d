"""LeaseKeeper: a short lease on a piece of work, renewed while the work is alive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import structlog

from src.application.ports.clock import Clock
from src.application.ports.leases import LeaseLost

log = structlog.get_logger(__name__)
T = TypeVar("T")

Renew = Callable[[datetime], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class LeaseKeeper:
    """Runs `work` while renewing its lease every third of `lease` (so a dead holder's
    work is free again about one lease after it died). A refused renewal means someone
    else holds the work: it is cancelled and LeaseLost raised. A renewal that fails for
    another reason (throttling) is tried again at the next third; the lease still has two
    thirds left."""

    clock: Clock
    lease: timedelta

    def until(self) -> datetime:
        return self.clock.now() + self.lease

    async def hold(self, renew: Renew, work: Awaitable[T]) -> T:
        task = asyncio.ensure_future(work)
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew_while(task, renew, lost))
        try:
            return await task
        except asyncio.CancelledError:
            if lost.is_set() and not _cancelled_from_outside():
                raise LeaseLost("the work's lease was taken over") from None
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew_while(
        self, task: asyncio.Future[T], renew: Renew, lost: asyncio.Event
    ) -> None:
        every = max(0.5, self.lease.total_seconds() / 3)
        expires = self.until()
        while not task.done():
            await asyncio.sleep(every)
            until = self.until()
            try:
                kept = await renew(until)
            except Exception as err:
                log.warning("lease renewal failed; will retry", error=type(err).__name__)
                # Another try would land after the lease ran out: someone else may hold
                # the work by then, so it stops now.
                kept = self.clock.now() + timedelta(seconds=every) < expires
                if kept:
                    continue
            else:
                expires = until if kept else expires
            if not kept:
                log.warning("lease lost; stopping the work")
                lost.set()
                task.cancel()
                return


def _cancelled_from_outside() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
