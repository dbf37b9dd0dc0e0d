"""Where download tasks live, and how their results reach the job's counters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from src.domain.download_task import DownloadTask
from src.domain.export_job import ExportJob
from src.domain.upload_checkpoint import UploadCheckpoint


class RecordOutcome(Enum):
    DUPLICATE = "duplicate"  # nothing counted: recorded already, or taken over
    COUNTED = "counted"  # counted; other files are still pending
    COUNTED_LAST = "counted_last"  # counted, and it was the job's last pending file
    # counted on a job dispatched by an earlier version: whether it was the last file,
    # the job's own read tells (CompleteJob)
    COUNTED_MAYBE_LAST = "counted_maybe_last"


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: RecordOutcome
    # COUNTED_LAST: the job's final (completed, failed), so nobody reads them again
    final_counts: tuple[int, int] | None = None


class TaskRepository(Protocol):
    """Per-file records, kept apart from the job item, and the job's file counters on
    a small item of their own. A task has no record until a worker takes it (the work
    item carries it) or its result is written. A result is recorded once: conditional on
    the task not being finished (and, when leased, on the recorder's lease), in the same
    transaction as the counters, which also tell whether it was the job's last file."""

    async def add_all(self, tasks: Sequence[DownloadTask]) -> list[DownloadTask]:
        """Store the tasks not stored yet (existing ones are left as they are). Returns
        each task as stored: a new one as given, an existing one as found (or as given
        when the store cannot say). Safe to call again with the same tasks."""
        ...

    async def get(self, job_id: str, task_id: str) -> DownloadTask | None: ...

    async def list_for_job(self, job_id: str) -> list[DownloadTask]: ...

    async def start_counting(self, job_id: str, total: int, now: datetime) -> None:
        """Open the job's counters with `total` files pending. Safe to call again: counters
        already open are left as they are."""
        ...

    async def finished_indexes(self, job_id: str, first: int, end: int) -> set[int]:
        """Indexes in [first, end) whose result is recorded (COMPLETED or FAILED)."""
        ...

    async def claim(
        self, task: DownloadTask, owner: str, until: datetime, now: datetime
    ) -> DownloadTask | None:
        """Not stored yet, PENDING, or RUNNING with an expired lease: becomes RUNNING
        under `owner` until `until` (attempts + 1), stored as `task` describes it where no
        record exists. None when another owner holds it or it is finished."""
        ...

    async def renew(
        self, task: DownloadTask, owner: str, until: datetime, upload: UploadCheckpoint | None
    ) -> bool:
        """Extend `owner`'s lease on a RUNNING task to `until`, storing the upload's
        checkpoint when one is given, in one conditional write. False: the lease is lost
        (another worker took the task, or it is finished): stop and hand back."""
        ...

    async def record_result(
        self, task: DownloadTask, owner: str, *, leased: bool = True
    ) -> Recorded:
        """Write the finished task and count it (completed or failed), atomically, in one
        round trip unless it is the job's last file (then two). DUPLICATE, with nothing
        counted, when the task is finished already or, leased, no longer RUNNING under
        `owner`. `leased=False` (a small file copied without a lease): recorded if the
        task is not finished yet, whoever else may be copying it. Contention on the
        counters is retried with jittered backoff, never counting a file twice."""
        ...

    async def reopen_failed(
        self, job: ExportJob, reopened: ExportJob, tasks: Sequence[DownloadTask]
    ) -> ExportJob:
        """An operator's retry: `job` (finished, as read) becomes `reopened` (DOWNLOADING)
        and its failed `tasks` PENDING again (`DownloadTask.retried`), the counters taking
        them back as pending. Atomic per chunk of tasks (each chunk moves the counters by
        exactly its own tasks, so an interrupted retry leaves every count exact); the
        first chunk also moves the job. Raises ConditionFailed, nothing written, when the
        job or a task changed since they were read. Returns the job as written."""
        ...

    async def release(self, task: DownloadTask, owner: str) -> None:
        """Give an unfinished task back (PENDING, no lease) if `owner` still holds it, so
        another worker can take it at once instead of waiting for the lease to expire."""
        ...
