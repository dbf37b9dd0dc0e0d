"""The poller loop: every tick, claim due jobs from the table and poll them."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from src.application.commands import PollDueJobsCommand
from src.application.use_cases.poll_export_status import PollExportStatus

log = structlog.get_logger(__name__)


class Poller:
    """Holds no job state: the schedule and the leases are in DynamoDB, so a restarted or
    additional replica simply picks up whatever is due."""

    name = "poller"

    def __init__(
        self, poll: PollExportStatus, *, owner: str, tick_seconds: float, batch: int
    ) -> None:
        self._poll = poll
        self._command = PollDueJobsCommand(owner=owner, limit=batch)
        self._tick = tick_seconds

    async def run(self, stop: asyncio.Event) -> None:
        log.info("poller started", owner=self._command.owner)
        while not stop.is_set():
            claimed = 0
            try:
                claimed = (await self._poll.execute(self._command)).claimed
            except Exception as err:
                log.error("poll round failed", error=type(err).__name__)
            if claimed < self._command.limit:  # a full batch means more are due: go on
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._tick)
        log.info("poller stopped")
