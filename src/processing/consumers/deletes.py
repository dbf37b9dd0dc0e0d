"""DeleteBatcher: finished messages leave the queue in DeleteMessageBatch calls of up to
10, not one call each."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from src.application.ports.message_queue import MessageQueue, QueueMessage

log = structlog.get_logger(__name__)

BATCH = 10  # SQS's limit per DeleteMessageBatch


class DeleteBatcher:
    """Collects finished messages and deletes them once 10 are waiting or `linger`
    seconds after the first one, whichever comes first. A delete that never happens
    (the process dies in between, or SQS refuses an entry) only means the message comes
    back after its visibility timeout and is recognised as done: handling is idempotent.
    `close` deletes whatever is still waiting, so a graceful stop leaves nothing behind."""

    def __init__(self, queue: MessageQueue, linger: float = 0.2) -> None:
        self._queue = queue
        self._linger = linger
        self._waiting: list[QueueMessage] = []
        self._timer: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, message: QueueMessage) -> None:
        self._waiting.append(message)
        if len(self._waiting) >= BATCH:
            self._send_now()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._after_linger())

    async def close(self) -> None:
        self._send_now()
        if self._sending:
            await asyncio.wait(set(self._sending))

    async def _after_linger(self) -> None:
        await asyncio.sleep(self._linger)
        self._timer = None
        self._send_now()

    def _send_now(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            task = asyncio.create_task(self._delete(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _delete(self, batch: list[QueueMessage]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                failed = await self._queue.delete(batch)
            except Exception as err:
                log.error("delete failed", count=len(batch), error=type(err).__name__)
                return
            if failed:
                log.warning("messages not deleted; they will come back", count=len(failed))
