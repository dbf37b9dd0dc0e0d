"""CancelJob: stop a job that nobody wants any more."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from src.application.callback_answer import error_name
from src.application.commands import CancelJobCommand
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.application.use_cases.complete_job import CompleteJob, JobNotFound
from src.domain.errors import JobErrorCode
from src.domain.events import JOB_CANCELLED, DomainEvent
from src.domain.export_job import ExportJob

log = structlog.get_logger(__name__)

_MAX_RACES = 5


@dataclass(frozen=True, slots=True)
class CancelResult:
    job: ExportJob
    cancelled: bool  # False: it had already ended


@dataclass(frozen=True, slots=True)
class CancelJob:
    """Moves a running job to CANCELLED with a conditional write (a job that already
    ended stays as it is). Work items of a cancelled job are dropped by the workers, and
    the poller no longer claims it. The workflow is answered with JobCancelled only when
    it is still waiting."""

    jobs: JobRepository
    complete_job: CompleteJob
    events: EventPublisher
    clock: Clock

    async def execute(self, command: CancelJobCommand) -> CancelResult:
        for _ in range(_MAX_RACES):
            job = await self.jobs.get(command.job_id)
            if job is None:
                raise JobNotFound(command.job_id)
            if job.is_terminal:
                return CancelResult(job, cancelled=False)
            if command.closed_tokens and any(
                t.digest() not in command.closed_tokens for t in job.unanswered_tokens()
            ):  # another workflow attached meanwhile: only the gone ones are answered
                await self.jobs.mark_answered(job.job_id, command.closed_tokens)
                return CancelResult(job, cancelled=False)
            now = self.clock.now()
            cancelled = job.cancel(JobErrorCode.CANCELLED, command.message, now)
            if command.gone_code is not None:
                cancelled = cancelled.workflow_gone(command.gone_code, now)
            elif command.notify_workflow:
                cancelled = self.complete_job.lease_answer(cancelled, now)
            try:
                job = await self.jobs.save(cancelled)
            except ConditionFailed:
                continue
            log.warning("job cancelled", reason=command.message)
            detail = {
                "status": job.status,
                "error": error_name(job),
                "executionArn": job.execution_arn,
            }
            await self.events.publish(DomainEvent(JOB_CANCELLED, job.job_id, now, detail))
            if command.notify_workflow and job.has_task_token():
                job = await self.complete_job.answer(job)
            return CancelResult(job, cancelled=True)
        raise ConditionFailed(f"job {command.job_id} kept changing while cancelling")
