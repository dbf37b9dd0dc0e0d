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
from src.application.ports.export_api import ExportApi, ExportState
from src.application.ports.file_transfer import FileTransfer, TransferFailed
from src.application.ports.leases import LeaseLost
from src.application.ports.task_repository import RecordOutcome, TaskRepository
from src.application.services.lease_keeper import LeaseKeeper
from src.application.services.recent_jobs import RecentJobs
from src.application.use_cases.complete_job import CompleteJob, JobNotFound
from src.domain.download_task import DownloadTask, TaskStatus
from src.domain.events import TASK_COMPLETED, TASK_FAILED, DomainEvent
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.upload_checkpoint import UploadCheckpoint

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
    redelivered work item never counts twice. A work item's first delivery carries the
    task as dispatched (no read), and a file declared smaller than one multipart part is
    copied without a lease: its result write is conditional on the task not being
    finished, which is what keeps it counted once. Whoever records the last file runs
    CompleteJob, whose conditional write has exactly one winner.

    The lease is short and renewed every third of it while the copy is alive (each stored
    part of a big file is checkpointed in the same write), so a dead worker's file is free
    again about one lease later and resumes from its last stored part. A URL about to
    expire, or refused with 403, is replaced by the one the Export API lists now for the
    same file; only a file it no longer lists fails."""

    recent: RecentJobs  # the job's status, read once per job every few seconds
    tasks: TaskRepository
    transfer: FileTransfer
    complete_job: CompleteJob
    events: EventPublisher
    clock: Clock
    lease: timedelta
    export_api: ExportApi | None = None
    url_margin: timedelta = timedelta(seconds=60)
    # Files declared (fileSize) smaller than this many bytes are copied without a lease.
    # 0: every file is leased.
    unleased_below: int = 0

    async def execute(self, command: ProcessFileCommand) -> FileResult:
        task = await self._task(command)
        if task is None:
            log.warning("work item for an unknown task", task_id=command.task_id)
            return FileResult(FileOutcome.UNKNOWN)
        if task.status.is_terminal:
            # Its recorder may have died before finishing the job: finish it if due
            # (CompleteJob does nothing unless every file is counted and nobody won yet).
            with contextlib.suppress(JobNotFound):  # the job item expired meanwhile
                await self.complete_job.execute(CompleteJobCommand(command.job_id))
            return FileResult(FileOutcome.ALREADY_DONE)
        job = await self.recent.get(command.job_id)
        if job is None or job.is_terminal:
            return FileResult(FileOutcome.JOB_ENDED)
        if job.status is not JobStatus.DOWNLOADING:
            return FileResult(FileOutcome.NOT_READY)
        now = self.clock.now()
        if self._small(task) and not task.is_leased(now):
            finished = await self._copy(job, task.start_unleased(), command.owner, None)
            return await self._record(finished, command.owner, leased=False)
        claimed = await self.tasks.claim(task, command.owner, now + self.lease, now)
        if claimed is None:
            return self._busy(await self.tasks.get(command.job_id, command.task_id), now)
        keeper = LeaseKeeper(self.clock, self.lease)
        try:
            finished = await keeper.hold(
                lambda until: self.tasks.renew(claimed, command.owner, until, None),
                self._copy(job, claimed, command.owner, keeper),
            )
        except LeaseLost:
            log.warning("another worker took the file over; leaving it", task_id=task.task_id)
            return FileResult(FileOutcome.BUSY, int(self.lease.total_seconds()))
        except BaseException:  # shutting down or a failure: let another worker take it now
            await asyncio.shield(self.tasks.release(claimed, command.owner))
            raise
        return await self._record(finished, command.owner, leased=True)

    async def _task(self, command: ProcessFileCommand) -> DownloadTask | None:
        """The work item's task on its first delivery; after that, the record (its lease,
        its checkpoint) if a worker has written one, else still the work item's."""
        if command.dispatched is not None and not command.redelivered:
            return command.dispatched
        stored = await self.tasks.get(command.job_id, command.task_id)
        return stored or command.dispatched

    def _small(self, task: DownloadTask) -> bool:
        """Declared smaller than one multipart part: one PUT, nothing to resume, so no
        lease is taken (a duplicate copy writes the same bytes to the same key)."""
        size = task.expected_size
        return size is not None and size < self.unleased_below

    async def _record(self, finished: DownloadTask, owner: str, *, leased: bool) -> FileResult:
        outcome = await self.tasks.record_result(finished, owner, leased=leased)
        if outcome is RecordOutcome.DUPLICATE:
            log.info("result already recorded elsewhere", task_id=finished.task_id)
            return FileResult(FileOutcome.ALREADY_DONE)
        name = TASK_COMPLETED if finished.status is TaskStatus.COMPLETED else TASK_FAILED
        await self.events.publish(
            DomainEvent(name, finished.job_id, self.clock.now(), {"taskId": finished.task_id})
        )
        if outcome is not RecordOutcome.COUNTED:  # the last file (or it may be): finish
            with contextlib.suppress(JobNotFound):
                await self.complete_job.execute(CompleteJobCommand(finished.job_id))
        return FileResult(FileOutcome.RECORDED)

    @staticmethod
    def _busy(task: DownloadTask | None, now: datetime) -> FileResult:
        if task is None or task.status.is_terminal:
            return FileResult(FileOutcome.ALREADY_DONE)
        if task.lease_expires_at is None:
            return FileResult(FileOutcome.BUSY, 1)
        left = (task.lease_expires_at - now).total_seconds()
        return FileResult(FileOutcome.BUSY, max(1, min(int(left) + 1, 43_200)))

    async def _copy(
        self, job: ExportJob, task: DownloadTask, owner: str, keeper: LeaseKeeper | None
    ) -> DownloadTask:
        async def checkpoint(upload: UploadCheckpoint) -> None:
            nonlocal task
            if keeper is None:  # declared small, yet multipart: nothing to hand over
                return
            try:
                kept = await self.tasks.renew(task, owner, keeper.until(), upload)
            except Exception as err:  # throttled: the next part's checkpoint covers this one
                log.warning("checkpoint not stored; will retry", error=type(err).__name__)
                return
            if not kept:
                raise LeaseLost("the file's lease was taken over")
            task = task.checkpointed(upload)

        if task.url_expires_within(self.clock.now(), self.url_margin):
            log.info("download URL expires soon; asking for a fresh one", index=task.index)
            task = await self._fresh_url(job, task)
            if task.status is TaskStatus.FAILED:
                return task
        refreshed = False
        while True:
            try:
                result = await self.transfer.transfer(
                    task.url,
                    task.output_key,
                    expected_size=task.expected_size,
                    expected_sha256=task.expected_sha256,
                    resume=task.upload,
                    on_checkpoint=checkpoint,
                )
            except TransferFailed as err:
                if err.url_refused and not refreshed and self.export_api is not None:
                    log.info("download URL refused; asking for a fresh one", index=task.index)
                    task, refreshed = await self._fresh_url(job, task), True
                    if task.status is TaskStatus.FAILED:
                        return task
                    continue
                log.warning(
                    "file failed", index=task.index, reason=err.reason, attempts=err.attempts
                )
                return task.fail(err.reason, self.clock.now())
            log.info("file stored", index=task.index, key=result.key, bytes=result.bytes)
            return task.succeed(size=result.bytes, sha256=result.sha256, now=self.clock.now())

    async def _fresh_url(self, job: ExportJob, task: DownloadTask) -> DownloadTask:
        """The URL the Export API lists now for this file (same index and name). Its being
        unavailable raises: the work item is retried later, the file is not failed."""
        if self.export_api is None:
            return task
        status = await self.export_api.get_export(job.export_id)
        listed = status.files[task.index] if task.index < len(status.files) else None
        if (
            status.state is not ExportState.READY
            or listed is None
            or (listed.file_name != task.file_name)
        ):
            reason = "the Export API no longer lists this file"
            log.warning("file failed", index=task.index, reason=reason)
            return task.fail(reason, self.clock.now())
        return task.with_url(listed.url, listed.expires_at)
