"""StartExportJob: record a workflow's export request, exactly once."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from src.application.commands import StartExportJobCommand
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.job_repository import JobRepository
from src.domain.events import JOB_CREATED, DomainEvent
from src.domain.export_job import ExportJob

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StartResult:
    job: ExportJob
    created: bool


@dataclass(frozen=True, slots=True)
class StartExportJob:
    """Creates the job with a conditional put. A redelivered or duplicated message finds
    the existing job and changes nothing: `created` is False and the caller acknowledges."""

    jobs: JobRepository
    events: EventPublisher
    clock: Clock

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
            return StartResult(existing or job, created=False)
        log.info("export job created", has_task_token=job.has_task_token())
        await self.events.publish(DomainEvent(JOB_CREATED, job.job_id, job.created_at))
        return StartResult(job, created=True)
