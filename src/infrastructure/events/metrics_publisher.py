"""MetricsEventPublisher: domain events counted as Prometheus metrics, then handed on."""

from __future__ import annotations

from src.application.ports.event_publisher import EventPublisher
from src.domain.events import (
    JOB_ANSWERED,
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_CREATED,
    JOB_FAILED,
    DomainEvent,
)
from src.observability.metrics import ANSWER_LATENCY, JOBS_ENDED, JOBS_STARTED

_ENDED = frozenset({JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED})
# OpenMetrics allows 128 characters of exemplar labels: the execution's name (the last
# part of its ARN) fits, the whole ARN often does not.
_EXEMPLAR_CHARS = 128 - len("execution")


def exemplar(event: DomainEvent) -> dict[str, str] | None:
    arn = event.detail.get("executionArn")
    if not isinstance(arn, str) or not arn:
        return None
    return {"execution": arn.rsplit(":", 1)[-1][-_EXEMPLAR_CHARS:]}


class MetricsEventPublisher:  # implements EventPublisher
    def __init__(self, inner: EventPublisher) -> None:
        self._inner = inner

    async def publish(self, event: DomainEvent) -> None:
        detail = event.detail
        if event.name == JOB_CREATED:
            JOBS_STARTED.labels("yes" if detail.get("withToken") else "no").inc()
        elif event.name in _ENDED:
            status = str(detail.get("status", event.name.rsplit(".", 1)[-1].upper()))
            JOBS_ENDED.labels(status, str(detail.get("error", ""))).inc(exemplar=exemplar(event))
        elif event.name == JOB_ANSWERED:
            latency = detail.get("latencySeconds")
            if detail.get("delivered") and isinstance(latency, int | float):
                ANSWER_LATENCY.observe(max(0.0, float(latency)), exemplar=exemplar(event))
        await self._inner.publish(event)
