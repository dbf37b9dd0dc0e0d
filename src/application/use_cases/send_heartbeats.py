"""SendHeartbeats: keep waiting workflows from timing out while their export runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog

from src.application.commands import CancelJobCommand, SendHeartbeatsCommand
from src.application.ports.clock import Clock
from src.application.ports.job_repository import JobRepository
from src.application.ports.workflow_callbacks import (
    CallbackRejected,
    CallbackUnavailable,
    WorkflowCallbacks,
)
from src.application.use_cases.cancel_job import CancelJob
from src.domain.export_job import ExportJob

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    sent: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class SendHeartbeats:
    """For every unfinished job with a task token whose heartbeat is due, one replica
    (the one whose conditional claim wins) sends SendTaskHeartbeat. A token the workflow
    no longer accepts (TaskTimedOut, TaskDoesNotExist, InvalidToken) means the workflow
    gave up: the job is cancelled without an answer. Throttling is left for next time."""

    jobs: JobRepository
    callbacks: WorkflowCallbacks
    cancel_job: CancelJob
    clock: Clock
    interval: timedelta

    async def execute(self, command: SendHeartbeatsCommand) -> HeartbeatReport:
        now = self.clock.now()
        due = await self.jobs.claim_due_heartbeats(now, now + self.interval, command.limit)
        results = await asyncio.gather(*(self._beat(job) for job in due))
        return HeartbeatReport(sent=len(due), cancelled=sum(results))

    async def _beat(self, job: ExportJob) -> bool:
        assert job.task_token is not None
        with structlog.contextvars.bound_contextvars(job_id=job.job_id):
            try:
                await self.callbacks.send_heartbeat(job.task_token)
            except CallbackRejected as err:
                log.warning("workflow gave up; cancelling", error_code=err.code)
                message = f"The workflow stopped waiting ({err.code})"
                command = CancelJobCommand(job.job_id, message, False, gone_code=err.code)
                return (await self.cancel_job.execute(command)).cancelled
            except CallbackUnavailable as err:
                log.warning("heartbeat not delivered; will retry", error_code=err.code)
            return False
