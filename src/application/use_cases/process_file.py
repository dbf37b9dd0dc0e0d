"""ProcessFile: copy one file of an export into the object store and count it, once."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import structlog

from src.application.commands import CompleteJobCommand, ProcessFileCommand
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.file_transfer import FileTransfer, TransferFailed
from src.application.ports.job_repository import JobRepository
from src.application.ports.task_repository import TaskRepository
from src.application.use_cases.complete_job import CompleteJob, JobNotFound
from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.events import TASK_COMPLETED, TASK_FAILED, DomainEvent
from src.domain.job_status import JobStatus

log = structlog.get_logger(__name__)


class FileOutcome(Enum):
    RECORDED = "recorded"  # this call counted the file
    ALREADY_DONE = "already_done"  # a duplicate work item: nothing to do
    BUSY = "busy"  # another worker holds the task's lease: try later
    NOT_READY = "not_ready"  # the job is not DOWNLOADING yet: try again soon
    JOB_ENDED = "job_ended"  # the job was cancelled or failed: drop the work item
    UNKNOWN = "unknown"  # no such task


@dataclass(frozen=True, slots=True)
class FileResult:
    outcome: FileOutcome
    retry_after_seconds: int | None = None  # for BUSY: when the other lease runs out


@dataclass(frozen=True, slots=True)
class ProcessFile:
    """Leases the task, streams the file, then records the result and the job's counter
    in one transaction that only the lease holder of a RUNNING task can make, so a
    redelivered work item never counts twice. Whoever records the last file runs
    CompleteJob, whose conditional write has exactly one winner."""

    jobs: JobRepository
    tasks: TaskRepository
    transfer: FileTransfer
    complete_job: CompleteJob
    events: EventPublisher
    clock: Clock
    lease: timedelta

    async def execute(self, command: ProcessFileCommand) -> FileResult:
        task = await self.tasks.get(command.job_id, command.task_id)
        if task is None:
            log.warning("work item for an unknown task", task_id=command.task_id)
            return FileResult(FileOutcome.UNKNOWN)
        if task.status.is_terminal:
            # Its recorder may have died before finishing the job: finish it if due
            # (CompleteJob does nothing unless every file is counted and nobody won yet).
            with contextlib.suppress(JobNotFound):  # the job item expired meanwhile
                await self.complete_job.execute(CompleteJobCommand(command.job_id))
            return FileResult(FileOutcome.ALREADY_DONE)
        job = await self.jobs.get(command.job_id)
        if job is None or job.is_terminal:
            return FileResult(FileOutcome.JOB_ENDED)
        if job.status is not JobStatus.DOWNLOADING:
            return FileResult(FileOutcome.NOT_READY)
        now = self.clock.now()
        claimed = await self.tasks.claim(task, command.owner, now + self.lease, now)
        if claimed is None:
            return self._busy(await self.tasks.get(command.job_id, command.task_id), now)
        try:
            finished = await self._copy(claimed)
        except asyncio.CancelledError:  # shutting down: let another worker take it now
            await asyncio.shield(self.tasks.release(claimed, command.owner))
            raise
        if not await self.tasks.record_result(finished, command.owner):
            log.info("result already recorded elsewhere", task_id=task.task_id)
            return FileResult(FileOutcome.ALREADY_DONE)
        name = TASK_COMPLETED if finished.status is TaskStatus.COMPLETED else TASK_FAILED
        await self.events.publish(
            DomainEvent(name, task.job_id, self.clock.now(), {"taskId": task.task_id})
        )
        await self.complete_job.execute(CompleteJobCommand(command.job_id))
        return FileResult(FileOutcome.RECORDED)

    @staticmethod
    def _busy(task: DownloadTask | None, now: datetime) -> FileResult:
        if task is None or task.status.is_terminal:
            return FileResult(FileOutcome.ALREADY_DONE)
        if task.lease_expires_at is None:
            return FileResult(FileOutcome.BUSY, 1)
        left = (task.lease_expires_at - now).total_seconds()
        return FileResult(FileOutcome.BUSY, max(1, min(int(left) + 1, 43_200)))

    async def _copy(self, task: DownloadTask) -> DownloadTask:
        try:
            result = await self.transfer.transfer(
                task.url,
                task.output_key,
                expected_size=task.expected_size,
                expected_sha256=task.expected_sha256,
            )
        except TransferFailed as err:
            log.warning("file failed", index=task.index, reason=err.reason, attempts=err.attempts)
            return task.fail(err.reason, self.clock.now())
        log.info("file stored", index=task.index, key=result.key, bytes=result.bytes)
        return task.succeed(size=result.bytes, sha256=result.sha256, now=self.clock.now())
