"""What an operator may do to a finished job: copy its failed files again, or send its
workflows an answer that could not be delivered."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import structlog

from src.application.ports.clock import Clock
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.application.ports.task_repository import TaskRepository
from src.application.ports.work_queue import PublishFailed, TaskRef, WorkQueue
from src.application.use_cases.complete_job import CALLBACK_LEASE_OWNER, CompleteJob, JobNotFound
from src.domain.download_task import TaskStatus
from src.domain.export_job import ExportJob
from src.domain.job_status import CallbackStatus

log = structlog.get_logger(__name__)


class ActionRefused(Exception):
    """The action does not apply to the job as it is; the message says why."""


@dataclass(frozen=True, slots=True)
class RetryFailedFiles:
    """A finished job whose answer was not delivered (or that has no workflow) gets its
    failed files copied again: the job is DOWNLOADING again, those files PENDING with
    fresh work items, and it ends (and answers) as any job does when its last file is
    counted. Refused while it runs, when nothing failed, or once its workflow has been
    answered (that answer cannot be taken back)."""

    jobs: JobRepository
    tasks: TaskRepository
    queue: WorkQueue
    clock: Clock
    # The reaper fails a job still downloading this long after it was created: a retry
    # needs time left to finish (at least a quarter of it, at most an hour).
    job_deadline: timedelta = timedelta(days=1)

    async def execute(self, job_id: str) -> ExportJob:
        job = await self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        refusal = job.retry_refusal()
        if refusal is not None:
            raise ActionRefused(refusal)
        now = self.clock.now()
        left = job.created_at + self.job_deadline - now
        if left < min(timedelta(hours=1), self.job_deadline / 4):
            raise ActionRefused(
                "the job is too close to its deadline (JOB_TIMEOUT_SECONDS after it was "
                "created) to be downloading again: start a new job instead"
            )
        if job.has_task_token() and job.is_leased(now):
            raise ActionRefused("its answer is being sent right now: look again in a minute")
        failed = [
            task.retried(now)
            for task in await self.tasks.list_for_job(job_id)
            if task.status is TaskStatus.FAILED
        ]
        if not failed:
            raise ActionRefused("no failed file has a record to retry")
        files = min(len(failed), job.failed_tasks)
        failed = failed[:files]
        try:
            reopened = await self.tasks.reopen_failed(job, job.reopen_failed(files, now), failed)
        except ConditionFailed:
            raise ActionRefused(
                "the job changed meanwhile (or an earlier version counted its files): look again"
            ) from None
        # Published after the job is DOWNLOADING again, dated now (a fresh dispatch: its
        # first delivery needs no read of the job). If this fails, the reaper finds the job
        # stalled and dispatches its unfinished files again.
        sent = self.clock.now()
        arn = job.execution_arn
        refs = [TaskRef(t.job_id, t.task_id, t.index, replace(t, created_at=sent), arn)
                for t in failed]  # fmt: skip
        try:
            await self.queue.publish(refs)
        except PublishFailed:
            log.error("retried files not all queued; the reaper dispatches them again",
                      job_id=job_id)  # fmt: skip
        log.warning("failed files retried by an operator", job_id=job_id, files=files)
        return reopened


@dataclass(frozen=True, slots=True)
class ResendAnswer:
    """Send a finished job's answer again to its workflows still owed one, when earlier
    tries failed for a reason that may pass (throttling, an outage: RETRYING). Not when
    it was delivered, when no workflow waits, or when the workflow refused it for good
    (its token timed out or is unknown: it will never take an answer)."""

    jobs: JobRepository
    complete_job: CompleteJob
    clock: Clock
    lease: timedelta = timedelta(minutes=5)

    async def execute(self, job_id: str) -> ExportJob:
        job = await self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        now = self.clock.now()
        status = job.callback.status
        if not job.is_terminal:
            raise ActionRefused(f"the job is still {job.status.value}: no answer is due yet")
        if status is CallbackStatus.NOT_REQUIRED:
            raise ActionRefused("no workflow waits for this job")
        if status is CallbackStatus.DELIVERED:
            raise ActionRefused("its answer was delivered already")
        if status is CallbackStatus.FAILED:
            raise ActionRefused(
                f"the workflow refused the answer for good ({job.callback.last_error})"
            )
        if job.is_leased(now):
            raise ActionRefused("its answer is being sent right now")
        try:
            claimed = await self.jobs.save(
                replace(job.leased(CALLBACK_LEASE_OWNER, now + self.lease), updated_at=now)
            )
        except ConditionFailed:
            raise ActionRefused("the job changed meanwhile: look again") from None
        log.warning("answer resent by an operator", job_id=job_id)
        return await self.complete_job.answer(claimed)
