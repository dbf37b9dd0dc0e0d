"""LoggingEventPublisher: domain events as structured log lines (SNS comes later)."""

from __future__ import annotations

import structlog

from src.domain.events import DomainEvent

log = structlog.get_logger("events")


class LoggingEventPublisher:  # implements EventPublisher
    async def publish(self, event: DomainEvent) -> None:
        log.info("domain event", event_name=event.name, job_id=event.job_id, **event.detail)
