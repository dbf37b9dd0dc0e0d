"""DispatchDownloadTasks: one work item per file of a ready export (each carrying its
task), chunk by chunk, resumable by any replica."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from src.application.commands import CompleteJobCommand, ResumeDispatchCommand
from src.application.log_context import job_context
from src.application.ports.clock import Clock
from src.application.ports.export_api import ExportApi, ExportFile, ExportState
from src.application.ports.job_repository import JobRepository
from src.application.ports.leases import LeaseLost
from src.application.ports.task_repository import TaskRepository
from src.application.ports.work_queue import PublishFailed, TaskRef, WorkQueue
from src.application.services.failure_text import describe
from src.application.services.lease_keeper import LeaseKeeper
from src.application.use_cases.complete_job import CompleteJob
from src.domain.dispatch_progress import DispatchProgress
from src.domain.download_task import DownloadTask, task_id_for
from src.domain.errors import JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.export_limits import ExportLimits
from src.domain.file_names import object_key
from src.domain.job_status import JobStatus

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    chunk: int = 100  # files per chunk: one cursor write, then their work items
    lease: timedelta = timedelta(minutes=2)  # renewed every third while dispatching
    max_attempts: int = 5  # tries of a chunk without all of it sent, then the job fails
    retry_after: timedelta = timedelta(seconds=30)  # after a failed chunk


@dataclass(slots=True)
class _Cursor:
    """The dispatcher's position; the lock keeps a renewal from racing an advance."""

    job_id: str
    owner: str
    at: int
    attempts: int  # claims counted since the cursor last moved with its items all sent
    ahead_from: int | None = None  # [ahead_from, at) written ahead, not sent yet
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class DispatchDownloadTasks:
    """A ready export's job moves to DOWNLOADING with its total at once, leased to its
    dispatcher, its counters are opened, and workers start on the first chunk while the
    rest is dispatched. Each chunk: first the cursor moves past it, in one conditional
    write that only the lease holder at that cursor can make; then its work items go out
    (each carries its task: no record is written per file until a worker takes it). Once
    the last chunk is out, one more write closes the dispatch, so the lease covers every
    send. Written ahead, so no work item is ever sent twice: a dispatcher that dies
    between the two leaves its chunk's items unsent (or some of them), and the reaper
    sends those once the job has fallen quiet (ReapStuckJobs); one that fails to queue
    some of them puts the cursor back to the chunk with the ones that went out noted, so
    the next attempt sends only the others. Once a dispatcher's lease runs out any replica claims the job
    (the claim counts), reads the listing again and carries on from the cursor, skipping
    files already recorded. A zero-file export completes at once."""

    jobs: JobRepository
    tasks: TaskRepository
    queue: WorkQueue
    complete_job: CompleteJob
    clock: Clock
    s3_prefix: str
    export_api: ExportApi | None = None  # to read the listing again when resuming
    policy: DispatchPolicy = field(default_factory=DispatchPolicy)
    limits: ExportLimits = field(default_factory=ExportLimits)

    async def execute(self, job: ExportJob, files: Sequence[ExportFile]) -> ExportJob:
        """`job` is leased to its poller, who found the export ready with `files`."""
        problem = self.limits.violation(self.s3_prefix, job.job_id, files)
        if problem:
            log.warning("export listing out of bounds", reason=problem)
            return await self._fail(job, JobErrorCode.EXPORT_API_FAILED, problem)
        if not files:
            log.info("export has no files")
            command = CompleteJobCommand(job.job_id, held=job)  # as claimed: no read
            return (await self.complete_job.execute(command)).job
        assert job.lease_owner is not None, "dispatch runs under the poller's lease"
        now = self.clock.now()
        first = min(self.policy.chunk, len(files))  # its cursor written ahead in this write
        job = await self.jobs.save(
            job.start_dispatching(len(files), job.lease_owner, now + self.policy.lease, now, first)
        )
        await self._continue(job, files, redo=False, ahead_from=0)
        return job

    async def resume(self, command: ResumeDispatchCommand) -> int:
        """Claim up to `limit` dispatches whose dispatcher is gone and carry each on."""
        now = self.clock.now()
        claimed = await self.jobs.claim_unfinished_dispatches(
            now, command.owner, now + self.policy.lease, command.limit
        )
        await asyncio.gather(*(self._resume_one(job) for job in claimed))
        return len(claimed)

    async def _resume_one(self, job: ExportJob) -> None:
        assert job.dispatch is not None and job.lease_owner is not None
        with job_context(job, export_id=job.export_id):
            log.info("resuming an unfinished dispatch", cursor=job.dispatch.cursor)
            if job.dispatch.overrun(self.policy.max_attempts):
                made = job.dispatch.attempts - 1
                last = (
                    job.dispatch.last_error
                    or "the dispatch did not finish (its replica may have stopped)"
                )
                message = f"Dispatching did not move on after {made} attempts; last: {last}"
                log.error("giving up on the job", reason=message)
                await self._fail(job, JobErrorCode.PROCESSING_ERROR, message)
                return
            try:
                files = await self._listing(job)
            except Exception as err:
                log.warning("listing unavailable to resume the dispatch", error=describe(err))
                await self._record_failure(job, job.dispatch.cursor, err)
                return
            if isinstance(files, JobError):
                await self._fail(job, files.code, files.message)
                return
            await self._continue(job, files)

    async def _listing(self, job: ExportJob) -> Sequence[ExportFile] | JobError:
        """The listing as the Export API gives it now (fresh URLs), or why it cannot be
        carried on with: it must still be ready and list as many files as at the start."""
        assert self.export_api is not None, "resuming needs the Export API"
        status = await self.export_api.get_export(job.export_id)
        if status.state is ExportState.EXPIRED:
            return JobError(JobErrorCode.EXPORT_EXPIRED, status.error_message or "Export expired")
        if status.state is not ExportState.READY:
            message = f"Export was {status.state.value} while its files were being dispatched"
            return JobError(JobErrorCode.EXPORT_API_FAILED, message)
        if len(status.files) != job.total_tasks:
            message = (
                f"Export's listing changed while its files were being dispatched: "
                f"{job.total_tasks} files at first, {len(status.files)} now"
            )
            return JobError(JobErrorCode.EXPORT_API_FAILED, message)
        problem = self.limits.violation(self.s3_prefix, job.job_id, status.files)
        return JobError(JobErrorCode.EXPORT_API_FAILED, problem) if problem else status.files

    async def _continue(
        self,
        job: ExportJob,
        files: Sequence[ExportFile],
        *,
        redo: bool = True,
        ahead_from: int | None = None,
    ) -> None:
        """`ahead_from`: the cursor was written ahead from there (the first chunk, by
        the write that started the dispatch): that chunk's items go out first."""
        assert job.dispatch is not None and job.lease_owner is not None
        cursor = _Cursor(job.job_id, job.lease_owner, job.dispatch.cursor, job.dispatch.attempts)
        cursor.ahead_from = ahead_from

        async def renew(until: datetime) -> bool:
            async with cursor.lock:
                if cursor.done:
                    return True
                return await self.jobs.advance_dispatch(
                    cursor.job_id, cursor.owner, cursor.at, cursor.at, until
                )

        keeper = LeaseKeeper(self.clock, self.policy.lease)
        try:
            await keeper.hold(renew, self._chunks(job, files, cursor, redo))
        except LeaseLost:
            log.warning("the job ended or another replica took the dispatch over", cursor=cursor.at)
        except Exception as err:
            log.exception("dispatching failed; another attempt carries on", cursor=cursor.at)
            await self._record_failure(job, cursor.at, err)

    async def _chunks(
        self, job: ExportJob, files: Sequence[ExportFile], cursor: _Cursor, redo: bool
    ) -> None:
        """`redo`: carried on after another dispatcher (or the reaper): files recorded
        already are skipped (one query per chunk). A first dispatch has none to skip."""
        assert job.dispatch is not None
        total = len(files)
        went = job.dispatch.sent  # by an attempt whose other items SQS refused
        await self.tasks.start_counting(job.job_id, total, self.clock.now())
        while cursor.at < total or cursor.ahead_from is not None:
            if cursor.ahead_from is not None:
                start, end = cursor.ahead_from, cursor.at
            else:
                start, end = cursor.at, min(cursor.at + self.policy.chunk, total)
            done = await self.tasks.finished_indexes(job.job_id, start, end) if redo else set()
            now = self.clock.now()
            arn = job.execution_arn
            refs = [
                TaskRef(job.job_id, task_id_for(i), i, self._task(job, i, files[i], now), arn)
                for i in range(start, end)
                if i not in done and i not in went
            ]
            # Once the cursor has moved past the chunk its items must go out: the step
            # runs to its end even if this is cancelled (shutdown, a lease lost meanwhile).
            if not await asyncio.shield(self._send_chunk(cursor, start, end, refs, went)):
                return  # some were refused: taken up again after a pause
            if done:
                log.info("chunk dispatched again", already_recorded=len(done))
        await self._move(cursor, None)  # every work item is out: the dispatch closes
        log.info("download tasks dispatched", total_tasks=total)

    async def _send_chunk(
        self, cursor: _Cursor, start: int, end: int, refs: Sequence[TaskRef], went: frozenset[int]
    ) -> bool:
        """The cursor moves past the chunk (written ahead), then its work items go out.
        False when some could not be queued (the dispatch was put back to the chunk)."""
        if cursor.ahead_from is not None:  # moved past it already
            cursor.ahead_from = None
        else:
            await self._move(cursor, end)
        try:
            await self.queue.publish(refs)
        except Exception as err:
            await self._rewind(cursor, start, end, refs, went, err)
            return False
        cursor.attempts = 0
        return True

    async def _move(self, cursor: _Cursor, to: int | None) -> None:
        """The cursor moves on to `to` (None: past the last file, the dispatch closes)
        with the lease renewed, in one write only its holder at that cursor can make."""
        async with cursor.lock:
            now = self.clock.now()
            until = now + self.policy.lease
            if not await self.jobs.advance_dispatch(
                cursor.job_id, cursor.owner, cursor.at, to, until, now
            ):
                raise LeaseLost("the dispatch was taken over")
            if to is None:
                cursor.done = True
            else:
                cursor.at = to

    async def _rewind(
        self,
        cursor: _Cursor,
        start: int,
        end: int,
        refs: Sequence[TaskRef],
        went: frozenset[int],
        err: Exception,
    ) -> None:
        """Some of the chunk's work items were not queued: the cursor goes back to the
        chunk, with those that were noted so that they are not sent again. This try
        counts as one of the chunk's attempts: a chunk that never goes out ends the job."""
        unsent = err.unsent if isinstance(err, PublishFailed) and err.unsent else refs
        missing = {ref.index for ref in unsent}
        sent = {i for i in went if i >= start} | {r.index for r in refs if r.index not in missing}
        log.warning(
            "work items not all queued; the chunk is taken up again",
            cursor=start,
            unsent=len(missing),
            error=describe(err),
        )
        attempts = max(cursor.attempts, 1)  # 0: this one moved the cursor to the chunk
        progress = DispatchProgress(start, attempts, describe(err), frozenset(sent))
        retry_at = self.clock.now() + self.policy.retry_after
        async with cursor.lock:
            cursor.done = True  # held until retry_at now: no more renewals
            rewound = await self.jobs.rewind_dispatch(
                cursor.job_id, cursor.owner, end, progress, retry_at
            )
        if not rewound:
            log.warning("the job ended or changed meanwhile; the chunk is not taken up again")

    async def _record_failure(self, job: ExportJob, cursor: int, err: Exception) -> None:
        assert job.lease_owner is not None
        retry_at = self.clock.now() + self.policy.retry_after
        try:
            await self.jobs.record_dispatch_failure(
                job.job_id, job.lease_owner, cursor, describe(err), retry_at
            )
        except Exception as again:  # the lease runs out instead: nothing is lost
            log.warning("could not record the failed dispatch", error=type(again).__name__)

    async def _fail(self, job: ExportJob, code: str, message: str) -> ExportJob:
        # A DOWNLOADING job's counters live apart: read it (with them) instead of holding it.
        held = None if job.status is JobStatus.DOWNLOADING else job
        command = CompleteJobCommand(job.job_id, JobError(code, message), held=held)
        return (await self.complete_job.execute(command)).job

    def _task(self, job: ExportJob, index: int, file: ExportFile, now: datetime) -> DownloadTask:
        return DownloadTask(
            job_id=job.job_id,
            task_id=task_id_for(index),
            index=index,
            url=file.url,
            file_name=file.file_name,
            output_key=object_key(self.s3_prefix, job.job_id, index, file.file_name),
            created_at=now,
            expected_size=file.size,
            expected_sha256=file.sha256,
            url_expires_at=file.expires_at,
        )
