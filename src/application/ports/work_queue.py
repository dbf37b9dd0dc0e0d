"""Hands download tasks to the workers (the download-tasks queue)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TaskRef:
    """What a work item says: which task. The URL stays in the task record."""

    job_id: str
    task_id: str
    index: int


class PublishFailed(Exception):
    """Some work items could not be queued even after retries."""


class WorkQueue(Protocol):
    """Publishes in batches, retries entries that failed, raises PublishFailed for
    what still could not be sent."""

    async def publish(self, refs: Sequence[TaskRef]) -> None: ...
