"""Domain events: facts other systems may want to hear about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class DomainEvent:
    name: str  # job.created, task.completed, task.failed, job.completed, job.failed, ...
    job_id: str
    at: datetime
    detail: Mapping[str, object] = field(default_factory=dict)


JOB_CREATED = "job.created"
TASK_DISPATCHED = "task.dispatched"
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"
JOB_COMPLETED = "job.completed"
JOB_FAILED = "job.failed"
JOB_CANCELLED = "job.cancelled"
# A finished job's answer went out: detail {"delivered": bool, "latencySeconds": float|None}
JOB_ANSWERED = "job.answered"
