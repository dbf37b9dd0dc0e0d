"""The export-jobs consumer: a message becomes a job whose polling is scheduled."""

from __future__ import annotations

import asyncio

import structlog
from pydantic import ValidationError

from src.application.ports.message_queue import QueueMessage
from src.application.use_cases.start_export_job import StartExportJob
from src.processing.consumers.loop import Ack, Outcome
from src.processing.messages import ExportJobMessage, describe_validation_error

log = structlog.get_logger(__name__)


class ExportJobHandler:
    """Invalid messages never create a job: they are logged with the reason and sent to
    the DLQ. A duplicate of a known job is acknowledged and changes nothing."""

    def __init__(self, start_job: StartExportJob, started: asyncio.Event | None = None) -> None:
        self._start_job = start_job
        self._started = started  # wakes this replica's poller: a new job is due now

    async def __call__(self, message: QueueMessage) -> Outcome:
        try:
            dto = ExportJobMessage.model_validate_json(message.body)
        except ValidationError as err:
            reason = f"invalid export-job message: {describe_validation_error(err)}"
            log.warning("invalid export-job message", reason=reason, body_bytes=len(message.body))
            return Outcome(Ack.REJECT, reason)
        trace = {"execution_arn": dto.execution_arn} if dto.execution_arn else {}
        with structlog.contextvars.bound_contextvars(
            job_id=dto.job_id, export_id=dto.export_id, **trace
        ):
            await self._start_job.execute(dto.to_command())
            if self._started is not None:
                self._started.set()
            return Outcome(Ack.DELETE)
