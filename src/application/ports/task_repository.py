"""Where download tasks live, and how their results reach the job's counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from src.domain.download_task import DownloadTask
from src.domain.upload_checkpoint import UploadCheckpoint


class TaskRepository(Protocol):
    """Per-file records, kept apart from the job item. A task's result is recorded once:
    conditional on the task still being RUNNING under the recorder's lease, in the same
    transaction as the job's counter."""

    async def add_all(self, tasks: Sequence[DownloadTask]) -> list[DownloadTask]:
        """Store the tasks not stored yet (existing ones are left as they are). Returns
        each task as stored: a new one as given, an existing one as found (or as given
        when the store cannot say). Safe to call again with the same tasks."""
        ...

    async def get(self, job_id: str, task_id: str) -> DownloadTask | None: ...

    async def list_for_job(self, job_id: str) -> list[DownloadTask]: ...

    async def claim(
        self, task: DownloadTask, owner: str, until: datetime, now: datetime
    ) -> DownloadTask | None:
        """PENDING, or RUNNING with an expired lease, becomes RUNNING under `owner` until
        `until` (attempts + 1). None when another owner holds it or it is finished."""
        ...

    async def renew(
        self, task: DownloadTask, owner: str, until: datetime, upload: UploadCheckpoint | None
    ) -> bool:
        """Extend `owner`'s lease on a RUNNING task to `until`, storing the upload's
        checkpoint when one is given, in one conditional write. False: the lease is lost
        (another worker took the task, or it is finished): stop and hand back."""
        ...

    async def record_result(self, task: DownloadTask, owner: str, *, leased: bool = True) -> bool:
        """Write the finished task and add one to the job's completedTasks or failedTasks,
        atomically. False, with nothing counted, when the task is no longer RUNNING under
        `owner` (already recorded) or the job is no longer DOWNLOADING. `leased=False`
        (a small file copied without a lease): recorded if the task is not finished yet,
        whoever else may be copying it."""
        ...

    async def release(self, task: DownloadTask, owner: str) -> None:
        """Give an unfinished task back (PENDING, no lease) if `owner` still holds it, so
        another worker can take it at once instead of waiting for the lease to expire."""
        ...
