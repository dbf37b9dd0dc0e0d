"""Hands download tasks to the workers (the download-tasks queue)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from src.domain.download_task import DownloadTask


@dataclass(frozen=True, slots=True)
class TaskRef:
    """What a work item says: which task, and (when dispatched) the task itself, so its
    first delivery needs no read to rediscover it. The record stays the truth."""

    job_id: str
    task_id: str
    index: int
    dispatched: DownloadTask | None = None
    execution_arn: str | None = None  # the job's, so the worker's log lines carry it


class PublishFailed(Exception):
    """Some work items could not be queued even after retries: `unsent` are those (the
    others were queued), so a caller can try again with these alone."""

    def __init__(self, message: str, unsent: Sequence[TaskRef] = ()) -> None:
        super().__init__(message)
        self.unsent = tuple(unsent)


class WorkQueue(Protocol):
    """Publishes in batches, retries entries that failed, raises PublishFailed naming
    what still could not be sent (a batch whose request failed outright counts as unsent
    whole: an answer lost after SQS took it is the one case where an item goes twice)."""

    async def publish(self, refs: Sequence[TaskRef]) -> None: ...

    async def backlog(self) -> int:
        """About how many work items the queue holds (waiting, in flight or delayed)."""
        ...
