"""The download-tasks consumer: one work item, one file."""

from __future__ import annotations

import uuid
from datetime import datetime

import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from src.application.commands import ProcessFileCommand
from src.application.ports.message_queue import QueueMessage
from src.application.use_cases.process_file import FileOutcome, ProcessFile
from src.domain.download_task import DownloadTask
from src.domain.export_limits import MAX_FILE_NAME_CHARS, MAX_URL_CHARS
from src.processing.consumers.loop import Ack, Outcome
from src.processing.messages import describe_validation_error

log = structlog.get_logger(__name__)


class DispatchedTask(BaseModel):
    """The task as dispatched, carried by the work item (see TaskRef)."""

    model_config = ConfigDict(extra="ignore")

    url: StrictStr = Field(min_length=1, max_length=MAX_URL_CHARS)
    fileName: StrictStr = Field(min_length=1, max_length=MAX_FILE_NAME_CHARS)
    outputKey: StrictStr = Field(min_length=1, max_length=1024)
    createdAt: datetime
    expectedSize: StrictInt | None = Field(None, ge=0)
    expectedSha256: StrictStr | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    urlExpiresAt: datetime | None = None


class DownloadTaskMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    jobId: StrictStr = Field(min_length=1, max_length=256)
    taskId: StrictStr = Field(min_length=1, max_length=64)
    executionArn: StrictStr | None = Field(None, max_length=2048)
    index: StrictInt | None = Field(None, ge=0)
    task: DispatchedTask | None = None

    def dispatched(self) -> DownloadTask | None:
        """The task as dispatched (None: an older work item that names it only)."""
        if self.task is None or self.index is None:
            return None
        t = self.task
        return DownloadTask(
            job_id=self.jobId,
            task_id=self.taskId,
            index=self.index,
            url=t.url,
            file_name=t.fileName,
            output_key=t.outputKey,
            created_at=t.createdAt,
            expected_size=t.expectedSize,
            expected_sha256=t.expectedSha256,
            url_expires_at=t.urlExpiresAt,
        )


_ACKS = {
    FileOutcome.RECORDED: Outcome(Ack.DELETE),
    FileOutcome.ALREADY_DONE: Outcome(Ack.DELETE),
    FileOutcome.JOB_ENDED: Outcome(Ack.DELETE),
    FileOutcome.UNKNOWN: Outcome(Ack.REJECT, "no such download task"),
    FileOutcome.NOT_READY: Outcome(Ack.RETRY, retry_after=5),
}


class DownloadTaskHandler:
    def __init__(self, process_file: ProcessFile, owner: str) -> None:
        self._process_file = process_file
        self._owner = owner

    async def __call__(self, message: QueueMessage) -> Outcome:
        try:
            dto = DownloadTaskMessage.model_validate_json(message.body)
        except ValidationError as err:
            reason = f"invalid download-task message: {describe_validation_error(err)}"
            log.warning("invalid download-task message", reason=reason)
            return Outcome(Ack.REJECT, reason)
        trace = {"execution_arn": dto.executionArn} if dto.executionArn else {}
        with structlog.contextvars.bound_contextvars(job_id=dto.jobId, task_id=dto.taskId, **trace):
            # One owner per handling (replica/nonce): a duplicate delivery on this same
            # replica cannot share the lease, its renewals or its final write.
            owner = f"{self._owner}/{uuid.uuid4().hex[:8]}"
            command = ProcessFileCommand(
                dto.jobId, dto.taskId, owner, dto.dispatched(), message.receive_count > 1
            )
            result = await self._process_file.execute(command)
            if result.outcome is FileOutcome.BUSY:  # come back when the other lease ends
                return Outcome(Ack.RETRY, retry_after=result.retry_after_seconds)
            return _ACKS[result.outcome]
