"""StartExportJob: record a workflow's export request, exactly once."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from src.application.commands import StartExportJobCommand
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.domain.events import JOB_CREATED, DomainEvent
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.polling import PollPolicy

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StartResult:
    job: ExportJob
    created: bool


@dataclass(frozen=True, slots=True)
class StartExportJob:
    """Creates the job (PROCESSING) with a conditional put, then schedules its first poll
    (POLLING). A redelivered or duplicated message finds the existing job and changes
    nothing, except a job left PROCESSING by a crash between those two writes, whose
    polling is scheduled now. `created` is False and the caller acknowledges."""

    jobs: JobRepository
    events: EventPublisher
    clock: Clock
    policy: PollPolicy = field(default_factory=PollPolicy)

    async def execute(self, command: StartExportJobCommand) -> StartResult:
        job = ExportJob.create(
            job_id=command.job_id,
            export_id=command.export_id,
            user_id=command.user_id,
            metadata=command.metadata,
            task_token=command.task_token,
            now=self.clock.now(),
        )
        if not await self.jobs.create(job):
            existing = await self.jobs.get(command.job_id)
            log.info("duplicate export job ignored", status=existing and existing.status.value)
            if existing is not None and existing.status is JobStatus.PROCESSING:
                existing = await self._schedule(existing)
            return StartResult(existing or job, created=False)
        log.info("export job created", has_task_token=job.has_task_token())
        await self.events.publish(DomainEvent(JOB_CREATED, job.job_id, job.created_at))
        return StartResult(await self._schedule(job), created=True)

    async def _schedule(self, job: ExportJob) -> ExportJob:
        try:
            return await self.jobs.save(job.start_polling(self.clock.now(), self.policy))
        except ConditionFailed:
            return job  # someone else moved it on
