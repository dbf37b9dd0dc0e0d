"""Tells the outside world what happened."""

from __future__ import annotations

from typing import Protocol

from src.domain.events import DomainEvent


class EventPublisher(Protocol):
    """Publishes domain events. Best effort: a failure to publish never fails a job."""

    async def publish(self, event: DomainEvent) -> None: ...
