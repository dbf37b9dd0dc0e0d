"""SendHeartbeats: keep waiting workflows from timing out while their export runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog

from src.application.commands import CancelJobCommand, SendHeartbeatsCommand
from src.application.log_context import job_context
from src.application.ports.clock import Clock
from src.application.ports.job_repository import JobRepository
from src.application.ports.workflow_callbacks import (
    CallbackRejected,
    CallbackUnavailable,
    TaskClosed,
    WorkflowCallbacks,
)
from src.application.use_cases.cancel_job import CancelJob
from src.domain.export_job import ExportJob
from src.domain.task_token import TaskToken

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    sent: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class SendHeartbeats:
    """For every unfinished job with a waiting workflow whose heartbeat is due, one
    replica (the one whose conditional claim wins) sends SendTaskHeartbeat to each of its
    workflows. Answers are read as AWS documents them:

    - TaskTimedOut / TaskDoesNotExist: that task is closed, its workflow gave up. When no
      workflow is left waiting, the job is cancelled without an answer.
    - InvalidToken (or another permanent refusal): the token is not valid for heartbeats,
      which says nothing about the workflow (emulators answer it for task states without
      HeartbeatSeconds): heartbeats stop for that token, the job goes on to its answer.
    - Throttling / 5xx: left for the next round."""

    jobs: JobRepository
    callbacks: WorkflowCallbacks
    cancel_job: CancelJob
    clock: Clock
    interval: timedelta

    async def execute(self, command: SendHeartbeatsCommand) -> HeartbeatReport:
        now = self.clock.now()
        due = await self.jobs.claim_due_heartbeats(now, now + self.interval, command.limit)
        results = await asyncio.gather(*(self.beat(job) for job in due))
        return HeartbeatReport(sent=len(due), cancelled=sum(results))

    async def beat(self, job: ExportJob) -> bool:
        """Heartbeat each workflow of a job whose heartbeat was just claimed (by this
        round, or by the poller's claim, which moves it too); True when every workflow
        had stopped waiting and the job was cancelled."""
        with job_context(job):
            closed: dict[TaskToken, str] = {}
            invalid: list[TaskToken] = []
            for token in job.heartbeat_tokens():
                try:
                    await self.callbacks.send_heartbeat(token)
                except TaskClosed as err:
                    log.info(
                        "heartbeat refused: task closed", error_code=err.code, task_token=token
                    )
                    closed[token] = err.code
                except CallbackRejected as err:
                    log.warning(
                        "heartbeat refused; no more heartbeats for this token, the job goes on",
                        error_code=err.code,
                        task_token=token,
                    )
                    invalid.append(token)
                except CallbackUnavailable as err:
                    log.warning("heartbeat not delivered; will retry", error_code=err.code)
            if invalid:
                await self.jobs.stop_heartbeats(job.job_id, [t.digest() for t in invalid])
            if closed:
                # The job may have ended and answered since it was claimed: a closed task
                # then means the workflow took its answer, not that it gave up.
                now_stored = await self.jobs.get(job.job_id, counted=False)
                if now_stored is not None and now_stored.is_terminal:
                    log.info("heartbeat after the job's answer; nothing to do")
                    return False
            return await self._closed(job, closed) if closed else False

    async def _closed(self, job: ExportJob, closed: dict[TaskToken, str]) -> bool:
        still_waiting = [t for t in job.unanswered_tokens() if t not in closed]
        code = next(iter(closed.values()))
        log.warning("workflow gave up", error_code=code, workflows=len(closed))
        if still_waiting:  # others wait on: only these are gone
            await self.jobs.mark_answered(job.job_id, [t.digest() for t in closed])
            return False
        message = f"The workflow stopped waiting ({code})"
        command = CancelJobCommand(
            job.job_id,
            message,
            False,
            gone_code=code,
            closed_tokens=frozenset(t.digest() for t in closed),
        )
        return (await self.cancel_job.execute(command)).cancelled
