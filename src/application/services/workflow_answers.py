"""WorkflowAnswers: every workflow waiting on a job gets the job's answer, once."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from src.application.callback_answer import FailureAnswer, SuccessAnswer, answer_for, failure
from src.application.ports.clock import Clock
from src.application.ports.event_publisher import EventPublisher
from src.application.ports.job_repository import ConditionFailed, JobRepository
from src.application.ports.workflow_callbacks import (
    CallbackError,
    CallbackUnavailable,
    WorkflowCallbacks,
)
from src.domain.events import JOB_ANSWERED, DomainEvent
from src.domain.export_job import ExportJob
from src.domain.task_token import TaskToken

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkflowAnswers:
    """Sends a finished job's answer to each workflow not answered yet and records, per
    token digest, who took it (or refused it for good), so a retry only reaches the rest.
    A callback error never changes the job's outcome: it is recorded and logged."""

    jobs: JobRepository
    callbacks: WorkflowCallbacks
    clock: Clock
    events: EventPublisher | None = None

    async def answer(self, job: ExportJob) -> ExportJob:
        answer = answer_for(job)
        answered: set[str] = set()
        delivered = retrying = False
        last_error: str | None = None
        for token in job.unanswered_tokens():
            error = await self.send(token, answer)
            if error is None:
                delivered = True
            else:
                last_error = error.code
                retrying = retrying or isinstance(error, CallbackUnavailable)
            if error is None or not isinstance(error, CallbackUnavailable):
                answered.add(token.digest())
        await self.jobs.mark_answered(job.job_id, answered)
        now = self.clock.now()
        job = job.answers_sent(
            frozenset(answered),
            delivered=delivered,
            retrying=retrying,
            error_code=last_error,
            now=now,
        )
        if self.events is not None and (delivered or last_error):
            latency = (now - job.completed_at).total_seconds() if job.completed_at else None
            detail = {
                "delivered": delivered,
                "latencySeconds": latency,
                "executionArn": job.execution_arn,
            }
            await self.events.publish(DomainEvent(JOB_ANSWERED, job.job_id, now, detail))
        try:
            return await self.jobs.save(job)
        except ConditionFailed:
            log.warning("callback record lost a concurrent write")
            return job

    async def answer_late_comer(self, job: ExportJob, token: TaskToken) -> None:
        """A workflow that sent this job after it had ended: the stored outcome, now."""
        error = await self.send(token, answer_for(job))
        if error is None or not isinstance(error, CallbackUnavailable):
            await self.jobs.mark_answered(job.job_id, [token.digest()])
            return
        raise error  # its message is retried (visibility backoff) and answers again

    async def refuse(self, token: TaskToken, error: str, cause: str) -> None:
        """Answer a workflow whose request cannot be taken (it never becomes a job)."""
        refused = await self.send(token, failure(error, cause))
        if isinstance(refused, CallbackUnavailable):
            raise refused

    async def send(
        self, token: TaskToken, answer: SuccessAnswer | FailureAnswer
    ) -> CallbackError | None:
        """One answer to one workflow; the error (already logged) or None when taken."""
        try:
            if isinstance(answer, SuccessAnswer):
                await self.callbacks.send_success(token, answer.output)
            else:
                await self.callbacks.send_failure(token, answer.error, answer.cause)
        except CallbackError as err:
            retryable = isinstance(err, CallbackUnavailable)
            log.error(
                "workflow callback failed",
                error_code=err.code,
                retryable=retryable,
                task_token=token,
            )
            return err
        log.info("workflow answered", task_token=token, kind=type(answer).__name__)
        return None
