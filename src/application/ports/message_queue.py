"""A queue of messages the driving side consumes (SQS in production)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class QueueMessage:
    message_id: str
    body: str
    receipt_handle: str
    receive_count: int = 1


class MessageLost(Exception):
    """The queue no longer lets us hold the message (its receipt is no longer valid):
    someone else may be working on it now."""


class MessageQueue(Protocol):
    """Long-polling receive, per-entry delete, visibility control."""

    async def receive(
        self, max_messages: int, wait_seconds: int, visibility_seconds: int
    ) -> Sequence[QueueMessage]:
        """Received messages stay invisible to others for `visibility_seconds`."""
        ...

    async def delete(self, messages: Sequence[QueueMessage]) -> Sequence[QueueMessage]:
        """Delete a batch; returns the messages that could not be deleted."""
        ...

    async def change_visibility(self, message: QueueMessage, seconds: int) -> None:
        """Raises MessageLost when the receipt is no longer valid."""
        ...

    async def reject(self, message: QueueMessage, reason: str) -> None:
        """Give up on a message that can never succeed: it goes to the dead-letter queue
        with the reason attached, so the operator sees it (nothing is dropped silently)."""
        ...
