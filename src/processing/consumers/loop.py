"""SqsConsumer: the receive loop every queue consumer shares."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import structlog

from src.application.ports.message_queue import MessageLost, MessageQueue, QueueMessage
from src.observability.metrics import IN_FLIGHT, MESSAGES
from src.processing.consumers.deletes import DeleteBatcher

log = structlog.get_logger(__name__)


class Ack(Enum):
    DELETE = "delete"  # done (or a duplicate): remove from the queue
    RETRY = "retry"  # leave it: it comes back after the visibility timeout
    REJECT = "reject"  # can never succeed: to the DLQ with a reason


@dataclass(frozen=True, slots=True)
class Outcome:
    ack: Ack
    reason: str = ""
    retry_after: int | None = None  # seconds until a RETRY comes back (None: visibility)


Handler = Callable[[QueueMessage], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    max_messages: int = 10
    wait_seconds: int = 20
    visibility_timeout: int = 60  # the message's lease, renewed every third while alive
    concurrency: int = 10
    error_backoff_seconds: float = 1.0
    # A message whose handling failed comes back after base x 2^(receives-1) seconds
    # (capped), not after the visibility timeout: no job may exist for it yet, so no
    # heartbeat keeps its workflow waiting meanwhile.
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: int = 60
    # Finished messages wait this long (at most) to be deleted together, up to 10 a call.
    delete_linger_seconds: float = 0.2
    # With every slot busy, slots free one at a time: receiving for each alone costs a
    # ReceiveMessage per message. A freed slot waits this long (at most) for others, so
    # that one call receives a fuller batch; an idle consumer does not wait.
    receive_linger_seconds: float = 0.1


class SqsConsumer:
    """Long-polls in batches of up to 10, runs up to `concurrency` messages at once
    (independent of the batch size), keeps each in-flight message invisible while it is
    worked on, and on stop finishes what it has before returning."""

    def __init__(
        self, name: str, queue: MessageQueue, handler: Handler, settings: ConsumerSettings
    ) -> None:
        self.name = name
        self._queue = queue
        self._handler = handler
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._slot_freed = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._deletes = DeleteBatcher(queue, settings.delete_linger_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("consumer started", consumer=self.name)
        try:
            await self._receive_until(stop)
        except asyncio.CancelledError:  # the grace period is over while still receiving
            await self._abandon()
            await asyncio.shield(self._deletes.close())
            raise
        try:
            await self.drain()
        finally:
            await asyncio.shield(self._deletes.close())
        log.info("consumer stopped", consumer=self.name)

    async def _receive_until(self, stop: asyncio.Event) -> None:
        while await self._room_for_more(stop):
            await self._fill_batch(stop)
            if stop.is_set():
                return
            free = self._free_slots()
            try:
                wanted = min(self._settings.max_messages, free)
                messages = await self._queue.receive(
                    wanted, self._settings.wait_seconds, self._settings.visibility_timeout
                )
            except Exception as err:  # never let the loop die on a transient error
                log.error("receive failed", consumer=self.name, error=type(err).__name__)
                await asyncio.sleep(self._settings.error_backoff_seconds)
                continue
            if stop.is_set():  # received while stopping: hand them straight back
                await self._release(messages)
                return
            if messages:
                MESSAGES.labels(self.name, "received").inc(len(messages))
            for message in messages:
                await self._slots.acquire()
                task = asyncio.create_task(self._process(message))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _room_for_more(self, stop: asyncio.Event) -> bool:
        """Wait until a slot is free, or until asked to stop (whichever comes first)."""
        acquire = asyncio.create_task(self._slots.acquire())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if acquire.done() and not acquire.cancelled():
                self._slots.release()  # only looking: the messages take their own slots
            else:
                acquire.cancel()
        return not stop.is_set()

    async def drain(self) -> None:
        """Wait for in-flight work. Cancelled (the grace period is over): cancel it and
        still wait a little, so each message is handed back before the process exits."""
        pending = set(self._in_flight)
        if not pending:
            return
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            await self._abandon()
            raise

    async def _abandon(self) -> None:
        pending = set(self._in_flight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    async def _release(self, messages: Sequence[QueueMessage]) -> None:
        for message in messages:
            try:
                await self._queue.change_visibility(message, 0)
            except Exception as err:
                log.warning("release failed", error=type(err).__name__)

    async def _fill_batch(self, stop: asyncio.Event) -> None:
        """Wait up to receive_linger_seconds for a full batch of free slots."""
        batch = min(self._settings.max_messages, self._settings.concurrency)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.receive_linger_seconds
        while self._free_slots() < batch and not stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), remaining)

    def _free_slots(self) -> int:
        return self._slots._value

    async def _process(self, message: QueueMessage) -> None:
        work = asyncio.current_task()
        assert work is not None
        keeper = asyncio.create_task(self._keep_invisible(message, work))
        in_flight = IN_FLIGHT.labels(self.name)
        in_flight.inc()
        try:
            with structlog.contextvars.bound_contextvars(message_id=message.message_id):
                outcome = await self._handle(message)
                await self._settle(message, outcome)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the message back at once for another replica.
            log.warning("in-flight message released", consumer=self.name)
            await self._release([message])
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            in_flight.dec()
            self._slots.release()
            self._slot_freed.set()

    async def _handle(self, message: QueueMessage) -> Outcome:
        try:
            return await self._handler(message)
        except Exception:
            MESSAGES.labels(self.name, "handler_error").inc()
            backoff = self.retry_backoff(message.receive_count)
            log.exception(
                "message handling failed; it will be retried",
                consumer=self.name,
                receive_count=message.receive_count,
                retry_in_seconds=backoff,
            )
            return Outcome(Ack.RETRY, "handler error", retry_after=backoff)

    def retry_backoff(self, receive_count: int) -> int:
        base = self._settings.retry_backoff_seconds * float(2 ** max(0, receive_count - 1))
        jitter = random.uniform(0, base / 4)
        return max(1, min(self._settings.retry_backoff_max_seconds, int(base + jitter)))

    async def _settle(self, message: QueueMessage, outcome: Outcome) -> None:
        try:
            if outcome.ack is Ack.DELETE:
                MESSAGES.labels(self.name, "deleted").inc()
                self._deletes.add(message)
            elif outcome.ack is Ack.REJECT:
                MESSAGES.labels(self.name, "rejected").inc()
                await self._queue.reject(message, outcome.reason)
            else:
                MESSAGES.labels(self.name, "retried").inc()
                if outcome.retry_after is not None:
                    await self._queue.change_visibility(message, outcome.retry_after)
        except Exception as err:
            log.error("acknowledgement failed", consumer=self.name, error=type(err).__name__)

    async def _keep_invisible(self, message: QueueMessage, work: asyncio.Task[None]) -> None:
        """Renew the message's visibility every third of it while it is in progress. A
        renewal the queue refuses for good (the message was received again elsewhere)
        means the lease is lost: stop the work and let it be handed back."""
        timeout = self._settings.visibility_timeout
        while True:
            await asyncio.sleep(max(1.0, timeout / 3))
            try:
                await self._queue.change_visibility(message, timeout)
            except MessageLost as err:
                log.warning("message lease lost; stopping its work", reason=str(err))
                work.cancel()
                return
            except Exception as err:
                log.warning("visibility extension failed", error=type(err).__name__)
