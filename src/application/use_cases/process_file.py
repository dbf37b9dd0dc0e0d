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


@dataclass(slots=True)
class _LazyLease:
    held: DownloadTask | None = None  # the task as claimed, once it was


@dataclass(frozen=True, slots=True)
class FileResult:
    outcome: FileOutcome
    retry_after_seconds: int | None = None  # for BUSY: when the other lease runs out


@dataclass(frozen=True, slots=True)
class ProcessFile:
    """Streams one file into the object store and records its result and the job's
    counters in one transaction, conditional on the task not being finished (and, when
    leased, on the lease), so a redelivered work item never counts twice. The common case
    costs the copy and that one write: the work item carries the task (no read on its
    first delivery), the job's status comes from RecentJobs (one read per job every few
    seconds), a file not declared big is copied without a lease, and the write tells
    whether it counted the job's last file: only then does CompleteJob run, whose
    conditional write has exactly one winner.

    A file declared big is leased before its copy starts, its lease renewed every third
    of it and by each stored part's checkpoint; one that turns out big is leased at its
    first stored part and renewed by each part's checkpoint only (a part slower than a
    lease may then be taken over: counted once all the same). A dead worker's file is
    free again about one lease later and resumes from its last stored part. A URL about
    to expire, or refused with 403, is replaced by the one the Export API lists now for
    the same file; only a file it no longer lists fails."""

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
        now = self.clock.now()
        if not self._just_dispatched(command, task, now):
            job = await self.recent.get(command.job_id)
            if job is None or job.is_terminal:
                return FileResult(FileOutcome.JOB_ENDED)
            if job.status is not JobStatus.DOWNLOADING:
                return FileResult(FileOutcome.NOT_READY)
        if self._small(task) and not task.is_leased(now):
            return await self._unleased(task, command.owner)
        claimed = await self.tasks.claim(task, command.owner, now + self.lease, now)
        if claimed is None:
            return self._busy(await self.tasks.get(command.job_id, command.task_id), now)
        keeper = LeaseKeeper(self.clock, self.lease)
        try:
            finished = await keeper.hold(
                lambda until: self.tasks.renew(claimed, command.owner, until, None),
                self._copy(claimed, command.owner, keeper),
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
        """Not declared at least one multipart part big, and no copy to resume: likely one
        PUT, with nothing to resume, so no lease is taken up front (a duplicate copy
        writes the same bytes to the same key; only one result is recorded)."""
        size = task.expected_size
        fits = size is None or size < self.unleased_below
        return self.unleased_below > 0 and task.upload is None and fits

    def _just_dispatched(
        self, command: ProcessFileCommand, task: DownloadTask, now: datetime
    ) -> bool:
        """A work item dispatched less than RecentJobs' ttl ago, on its first delivery, is
        as good as a read of its job that recent: dispatchers send work items only for a
        DOWNLOADING job they hold. Its job need not be read again."""
        if command.dispatched is None or command.redelivered:
            return False
        return timedelta(0) <= now - task.created_at < self.recent.ttl

    async def _unleased(self, task: DownloadTask, owner: str) -> FileResult:
        """A file that turns out bigger than one part is leased at its first stored part,
        so that from then on its checkpoints can be handed over (see _copy)."""
        lazy = _LazyLease()
        try:
            finished = await self._copy(task.start_unleased(), owner, None, lazy)
        except LeaseLost:
            log.warning("another worker holds the file; leaving it", task_id=task.task_id)
            return FileResult(FileOutcome.BUSY, int(self.lease.total_seconds()))
        except BaseException:
            if lazy.held is not None:
                await asyncio.shield(self.tasks.release(lazy.held, owner))
            raise
        return await self._record(finished, owner, leased=lazy.held is not None)

    async def _record(self, finished: DownloadTask, owner: str, *, leased: bool) -> FileResult:
        recorded = await self.tasks.record_result(finished, owner, leased=leased)
        outcome = recorded.outcome
        if outcome is RecordOutcome.DUPLICATE:
            log.info("result already recorded elsewhere", task_id=finished.task_id)
            return FileResult(FileOutcome.ALREADY_DONE)
        name = TASK_COMPLETED if finished.status is TaskStatus.COMPLETED else TASK_FAILED
        await self.events.publish(
            DomainEvent(name, finished.job_id, self.clock.now(), {"taskId": finished.task_id})
        )
        if outcome is not RecordOutcome.COUNTED:  # the last file (or it may be): finish
            command = CompleteJobCommand(finished.job_id, final_counts=recorded.final_counts)
            with contextlib.suppress(JobNotFound):
                await self.complete_job.execute(command)
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
        self,
        task: DownloadTask,
        owner: str,
        keeper: LeaseKeeper | None,
        lazy: _LazyLease | None = None,
    ) -> DownloadTask:
        async def checkpoint(upload: UploadCheckpoint) -> None:
            nonlocal task
            if keeper is None and lazy is None:
                return
            until = keeper.until() if keeper else self.clock.now() + self.lease
            if lazy is not None and lazy.held is None:
                # Unleased so far, and multipart after all: lease it now. Its lease is
                # then renewed by each stored part's checkpoint.
                claimed = await self.tasks.claim(task, owner, until, self.clock.now())
                if claimed is None:
                    raise LeaseLost("another worker holds the file")
                lazy.held = claimed
            try:
                kept = await self.tasks.renew(task, owner, until, upload)
            except Exception as err:  # throttled: the next part's checkpoint covers this one
                log.warning("checkpoint not stored; will retry", error=type(err).__name__)
                return
            if not kept:
                raise LeaseLost("the file's lease was taken over")
            task = task.checkpointed(upload)

        if task.url_expires_within(self.clock.now(), self.url_margin):
            log.info("download URL expires soon; asking for a fresh one", index=task.index)
            task = await self._fresh_url(task)
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
                    task, refreshed = await self._fresh_url(task), True
                    if task.status is TaskStatus.FAILED:
                        return task
                    continue
                log.warning(
                    "file failed", index=task.index, reason=err.reason, attempts=err.attempts
                )
                return task.fail(err.reason, self.clock.now())
            log.info("file stored", index=task.index, key=result.key, bytes=result.bytes)
            return task.succeed(size=result.bytes, sha256=result.sha256, now=self.clock.now())

    async def _fresh_url(self, task: DownloadTask) -> DownloadTask:
        """The URL the Export API lists now for this file (same index and name). Its being
        unavailable raises: the work item is retried later, the file is not failed."""
        if self.export_api is None:
            return task
        job = await self.recent.get(task.job_id)
        if job is None:  # expired meanwhile: nothing to ask the Export API about
            return task.fail("the job no longer exists", self.clock.now())
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
