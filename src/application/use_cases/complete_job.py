"""CompleteJob: the one terminal transition of a job, and the workflow's one answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from src.application.callback_answer import error_name
from src.application.commands import CompleteJobCommand
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.application.ports.workflow_callbacks import WorkflowCallbacks
from src.application.services.workflow_answers import WorkflowAnswers
from src.domain.events import JOB_COMPLETED, JOB_FAILED, DomainEvent
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus

log = structlog.get_logger(__name__)


_MAX_RACES = 5
CALLBACK_LEASE_OWNER = "callback"


class JobNotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class CompleteResult:
    job: ExportJob
    won: bool  # this call made the terminal transition (and so owned the callback)


@dataclass(frozen=True, slots=True)
class CompleteJob:
    """Moves the job to COMPLETED (every file counted, some may have failed) or FAILED
    with a conditional write that exactly one caller wins. Only the winner answers the
    workflow; a callback error is recorded on the job and never changes its outcome."""

    jobs: JobRepository
    callbacks: WorkflowCallbacks
    events: EventPublisher
    clock: Clock
    # How long the winner owns the answer: longer than one delivery with its retries.
    # Until it expires the reaper leaves the job alone, so the answer is never sent twice.
    callback_lease: timedelta = timedelta(seconds=300)

    async def execute(self, command: CompleteJobCommand) -> CompleteResult:
        held = command.held
        for _ in range(_MAX_RACES):
            job, held = held or await self._read(command), None
            if job is None:
                raise JobNotFound(command.job_id)
            if job.is_terminal:
                return CompleteResult(job, won=False)
            if command.failure is None and not job.all_files_done:
                return CompleteResult(job, won=False)  # the last file's recorder finishes it
            try:
                job = await self.jobs.save(self._finished(job, command))
            except ConditionFailed:
                continue  # someone wrote first: look again (they may have finished it)
            return CompleteResult(await self._announce(job), won=True)
        raise ConditionFailed(f"job {command.job_id} kept changing while completing")

    async def _read(self, command: CompleteJobCommand) -> ExportJob | None:
        if command.final_counts is None:
            return await self.jobs.get(command.job_id)
        job = await self.jobs.get(command.job_id, counted=False)
        if job is None or job.status is not JobStatus.DOWNLOADING:
            return job
        return job.with_progress(*command.final_counts, None)

    def _finished(self, job: ExportJob, command: CompleteJobCommand) -> ExportJob:
        now = self.clock.now()
        if command.failure is None:
            finished = job.complete(now)
        else:
            finished = job.fail(command.failure.code, command.failure.message, now)
        return self.lease_answer(finished, now)

    def lease_answer(self, job: ExportJob, now: datetime) -> ExportJob:
        """Take the answer's lease in the same write that finishes the job."""
        if not job.has_task_token():
            return job
        return job.leased(CALLBACK_LEASE_OWNER, now + self.callback_lease)

    async def _announce(self, job: ExportJob) -> ExportJob:
        log.info(
            "job finished",
            status=job.status.value,
            total_tasks=job.total_tasks,
            completed_tasks=job.completed_tasks,
            failed_tasks=job.failed_tasks,
        )
        name = JOB_COMPLETED if job.status is JobStatus.COMPLETED else JOB_FAILED
        await self.events.publish(
            DomainEvent(
                name,
                job.job_id,
                self.clock.now(),
                {"status": job.status, "error": error_name(job), "executionArn": job.execution_arn},
            )
        )
        if job.has_task_token():
            job = await self.answer(job)
        return job

    async def answer(self, job: ExportJob) -> ExportJob:
        """Send every waiting workflow its answer and record how it went."""
        return await WorkflowAnswers(self.jobs, self.callbacks, self.clock, self.events).answer(job)
