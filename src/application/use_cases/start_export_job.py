"""StartExportJob: record a workflow's export request, exactly once."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from src.application.commands import StartExportJobCommand
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.job_repository import AttachOutcome, ConditionFailed, JobRepository
from src.application.services.workflow_answers import WorkflowAnswers
from src.domain.errors import CallbackError
from src.domain.events import JOB_CREATED, DomainEvent
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.polling import PollPolicy
from src.domain.task_token import TaskToken

log = structlog.get_logger(__name__)

_MAX_RACES = 5


@dataclass(frozen=True, slots=True)
class StartResult:
    job: ExportJob
    created: bool
    conflict: bool = False  # the jobId belongs to another export: not attached


@dataclass(frozen=True, slots=True)
class StartExportJob:
    """Creates the job (PROCESSING, its first poll due at once) with one conditional put;
    the poller's claim moves it to POLLING. When the jobId exists already:

    - the same message again (its token is the job's, or it has none): nothing changes,
      except a job left PROCESSING without a schedule (by an earlier version, or the
      original service) is scheduled now;
    - another workflow sending the same job: it waits with the job (bounded, at most
      `max_waiting`) and gets the same answer; if the job has ended, it is answered from
      the stored outcome at once;
    - another exportId or userId under that jobId: a conflict, logged as one, never
      attached; a workflow waiting on it is answered `JobIdConflict`.
    """

    jobs: JobRepository
    events: EventPublisher
    clock: Clock
    answers: WorkflowAnswers
    policy: PollPolicy = field(default_factory=PollPolicy)
    max_waiting: int = 10

    async def execute(self, command: StartExportJobCommand) -> StartResult:
        job = ExportJob.create(
            job_id=command.job_id,
            export_id=command.export_id,
            user_id=command.user_id,
            metadata=command.metadata,
            task_token=command.task_token,
            now=self.clock.now(),
            policy=self.policy,  # its first poll is scheduled in the same write
            execution_arn=command.execution_arn,
        )
        if not await self.jobs.create(job):
            return await self._existing(command)
        log.info("export job created", has_task_token=job.has_task_token())
        detail = {"withToken": job.has_task_token()}
        await self.events.publish(DomainEvent(JOB_CREATED, job.job_id, job.created_at, detail))
        return StartResult(job, created=True)

    async def _existing(self, command: StartExportJobCommand) -> StartResult:
        for _ in range(_MAX_RACES):
            job = await self.jobs.get(command.job_id)
            if job is None:
                raise ConditionFailed(f"job {command.job_id} vanished while being read")
            if not job.same_request(command.export_id, command.user_id):
                await self._conflict(job, command)
                return StartResult(job, created=False, conflict=True)
            token = command.task_token
            if token is None or job.knows_token(token):
                log.info("duplicate export job ignored", status=job.status.value)
                if job.status is JobStatus.PROCESSING and job.poll is None:
                    job = await self._schedule(job)
                return StartResult(job, created=False)
            if await self._another_workflow(job, token):
                return StartResult(job, created=False)
        raise ConditionFailed(f"job {command.job_id} kept changing while attaching")

    async def _another_workflow(self, job: ExportJob, token: TaskToken) -> bool:
        """True when this workflow is taken care of; False: the job changed, look again."""
        if job.is_terminal:
            log.info("job already ended: answering the new workflow from its outcome")
            await self.answers.answer_late_comer(job, token)
            return True
        if len(job.waiting_tokens) >= self.max_waiting:
            log.warning("too many workflows wait for this job", waiting=len(job.waiting_tokens))
            cause = f"Job {job.job_id} already has {self.max_waiting} other workflows waiting"
            await self.answers.refuse(token, CallbackError.TOO_MANY_WAITING, cause)
            return True
        outcome = await self.jobs.attach_workflow(job.job_id, token, self.max_waiting)
        if outcome is AttachOutcome.ATTACHED:
            log.info("another workflow waits for this job", waiting=len(job.waiting_tokens) + 1)
            return True
        return False

    async def _conflict(self, job: ExportJob, command: StartExportJobCommand) -> None:
        log.error(
            "jobId conflict: the job exists for another export; message not attached",
            stored_export_id=job.export_id,
            conflicting_export_id=command.export_id,
            same_user=job.user_id == command.user_id,
            has_task_token=command.task_token is not None,
        )
        if command.task_token is not None:
            cause = (
                f"jobId {job.job_id} is already used by another export (exportId or userId differ)"
            )
            await self.answers.refuse(command.task_token, CallbackError.JOB_ID_CONFLICT, cause)

    async def _schedule(self, job: ExportJob) -> ExportJob:
        try:
            return await self.jobs.save(job.start_polling(self.clock.now(), self.policy))
        except ConditionFailed:
            return job  # someone else moved it on
