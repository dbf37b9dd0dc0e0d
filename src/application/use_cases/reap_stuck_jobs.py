"""ReapStuckJobs: find work that fell through the cracks and push it on, or end it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from src.application.commands import CompleteJobCommand, ReapCommand
from src.application.log_context import job_context
from src.application.ports.clock import Clock
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.application.ports.leases import Leases
from src.application.ports.task_repository import TaskRepository
from src.application.ports.work_queue import TaskRef, WorkQueue
from src.application.use_cases.complete_job import CompleteJob
from src.domain.download_task import TaskStatus
from src.domain.errors import JobErrorCode
from src.domain.export_job import ExportJob, JobError
from src.domain.job_status import JobStatus

log = structlog.get_logger(__name__)

LEASE_NAME = "reaper"


@dataclass(frozen=True, slots=True)
class ReaperPolicy:
    lease: timedelta = timedelta(seconds=60)
    callback_lease: timedelta = timedelta(seconds=300)  # one delivery with its retries
    max_callback_attempts: int = 10
    stall_after: timedelta = timedelta(minutes=10)  # DOWNLOADING with no progress
    # With nothing at all in the queue (waiting, in flight or delayed), a job short of
    # files with no progress for this long has lost their work items (a dispatcher died
    # between its cursor write and its sends). Longer than the minute SQS's approximate
    # counts may take to show what was just sent. Never more than stall_after.
    lost_after: timedelta = timedelta(minutes=2)
    # Behind a backlog a stalled job is re-dispatched only after this many stall_afters.
    backlog_patience: int = 3
    job_deadline: timedelta = timedelta(hours=24)  # from creation, whatever happens
    # Jobs left POLLING by the original service are put on the schedule this often (it
    # reads every POLLING job, so seldom; only needed while the two services overlap).
    adopt_every: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class ReapReport:
    ran: bool
    callbacks_retried: int = 0
    callbacks_abandoned: int = 0
    jobs_redispatched: int = 0
    jobs_finished: int = 0


@dataclass(frozen=True, slots=True)
class ReapStuckJobs:
    """Holds a lease so one replica reaps at a time. Answers workflows still owed an
    answer (bounded attempts), dispatches again the stalled jobs whose work items were
    lost (no progress for `lost_after` with the queue empty, or for `stall_after` and
    nothing left in the queue: a backlog is not lost work), completes jobs whose last
    file was recorded but not followed by CompleteJob, and fails jobs past the overall
    deadline with a callback (ProcessingError)."""

    jobs: JobRepository
    tasks: TaskRepository  # for jobs dispatched by an earlier version only
    queue: WorkQueue
    complete_job: CompleteJob
    leases: Leases
    clock: Clock
    policy: ReaperPolicy
    _adopted_at: list[datetime] = field(default_factory=list)  # this replica's last time

    async def execute(self, command: ReapCommand) -> ReapReport:
        now = self.clock.now()
        if not await self.leases.acquire(LEASE_NAME, command.owner, now + self.policy.lease, now):
            return ReapReport(ran=False)
        await self._adopt(now, command.limit)
        retried, abandoned = await self._callbacks(now, command.limit)
        redriven, finished = await self._stalled_downloads(now, command.limit)
        report = ReapReport(True, retried, abandoned, redriven, finished)
        if retried or abandoned or redriven or finished:
            log.info("reaper round", **asdict(report))
        return report

    async def _adopt(self, now: datetime, limit: int) -> None:
        if self._adopted_at and now - self._adopted_at[-1] < self.policy.adopt_every:
            return
        self._adopted_at[:] = [now]
        adopted = await self.jobs.adopt_unscheduled(now, limit)
        if adopted:
            log.info("jobs left polling by the original service scheduled", count=adopted)

    async def _callbacks(self, now: datetime, limit: int) -> tuple[int, int]:
        retried = abandoned = 0
        for job in await self.jobs.list_owing_callbacks(now, limit):
            with job_context(job):
                if job.callback.attempts >= self.policy.max_callback_attempts:
                    log.error("giving up on the workflow callback", attempts=job.callback.attempts)
                    await self._save_quietly(job.workflow_gone("CallbackAttemptsExhausted", now))
                    abandoned += 1
                    continue
                lease = job.leased(LEASE_NAME, now + self.policy.callback_lease)
                try:  # claim the answer: a concurrent writer makes ours fail
                    claimed = await self.jobs.save(replace(lease, updated_at=now))
                except ConditionFailed:
                    continue
                await self.complete_job.answer(claimed)
                retried += 1
        return retried, abandoned

    async def _stalled_downloads(self, now: datetime, limit: int) -> tuple[int, int]:
        redriven = finished = 0
        overdue = await self.jobs.list_overdue(
            JobStatus.DOWNLOADING, now - self.policy.job_deadline, limit
        )
        for job in overdue:  # past the deadline whatever its progress
            with job_context(job):
                hours = self.policy.job_deadline.total_seconds() / 3600
                failure = JobError(
                    JobErrorCode.PROCESSING_ERROR, f"Job did not finish within {hours:g} hours"
                )
                await self.complete_job.execute(CompleteJobCommand(job.job_id, failure))
                finished += 1
        done = {job.job_id for job in overdue}
        quiet = await self.jobs.list_stalled(JobStatus.DOWNLOADING, now - self._lost_after, limit)
        # Nothing queued anywhere: a job short of files and quiet for lost_after lost them;
        # else only one quiet for stall_after may have (asked only when one is quiet).
        waiting = await self.queue.backlog() if quiet else 0
        stalled_before = now - (self.policy.stall_after if waiting else self._lost_after)
        for job in quiet:
            if job.job_id in done or job.is_dispatching or job.updated_at > stalled_before:
                continue  # a dispatch still running (or to resume) is not a stall
            with job_context(job):
                if job.all_files_done:
                    await self.complete_job.execute(CompleteJobCommand(job.job_id))
                    finished += 1
                else:
                    redriven += await self._redrive(job, now, waiting)
        return redriven, finished

    @property
    def _lost_after(self) -> timedelta:
        return min(self.policy.lost_after, self.policy.stall_after)

    async def _redrive(self, job: ExportJob, now: datetime, waiting: int) -> int:
        """A backlog in the queue means its work items may be waiting their turn: it is
        left alone (looked at again each round) until it has made no progress for
        `backlog_patience` x `stall_after`; with nothing queued its items are lost. Lost
        ones are sent again by dispatching the job anew from its first file: the
        dispatcher reads the listing again (fresh URLs) and skips the files recorded."""
        if (
            waiting
            and now - job.updated_at < self.policy.stall_after * self.policy.backlog_patience
        ):
            log.info("stalled download job behind a backlog; not re-sent yet", backlog=waiting)
            return 0
        if not await self._save_quietly(replace(job, updated_at=now)):  # not looked at soon
            return 0  # it moved meanwhile (a dispatch closed, a file counted): not lost
        if not job.counted_apart:
            return await self._redrive_records(job, now)
        restarted = await self.jobs.restart_dispatch(job.job_id, now)
        if restarted:
            log.warning("download job stalled; dispatching its unrecorded files again")
        return int(restarted)

    async def _redrive_records(self, job: ExportJob, now: datetime) -> int:
        """A job dispatched by an earlier version: every file has its record, and its
        counts are on the job item. Re-queue the records no one finished or holds."""
        lost = [
            TaskRef(t.job_id, t.task_id, t.index, execution_arn=job.execution_arn)
            for t in await self.tasks.list_for_job(job.job_id)
            if t.status is TaskStatus.PENDING
            or (t.status is TaskStatus.RUNNING and not t.is_leased(now))
        ]
        if lost:
            log.warning("re-queueing lost download tasks", count=len(lost))
            await self.queue.publish(lost)
        return int(bool(lost))

    async def _save_quietly(self, job: ExportJob) -> bool:
        try:
            await self.jobs.save(job)
        except ConditionFailed:
            log.info("job changed meanwhile; the reaper leaves it")
            return False
        return True
