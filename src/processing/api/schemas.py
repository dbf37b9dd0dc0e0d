"""What the admin API answers (its OpenAPI schema): jobs, files, errors. Task tokens only
ever appear masked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from src.domain.download_task import DownloadTask
from src.domain.export_job import ExportJob


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. not_found, conflict")
    message: str
    details: list[dict[str, Any]] | None = None


class JobErrorOut(BaseModel):
    code: str
    message: str


class CallbackOut(BaseModel):
    status: str = Field(description="NOT_REQUIRED, PENDING, DELIVERED, RETRYING or FAILED")
    attempts: int
    lastError: str | None
    at: datetime | None


class WaitingWorkflow(BaseModel):
    token: str = Field(description="masked")
    answered: bool
    heartbeats: bool


class JobOut(BaseModel):
    jobId: str
    exportId: str
    userId: str
    status: str
    createdAt: datetime
    updatedAt: datetime
    completedAt: datetime | None
    totalTasks: int
    completedTasks: int
    failedTasks: int
    pendingTasks: int
    error: JobErrorOut | None
    callback: CallbackOut
    hasTaskToken: bool
    durationMs: int
    executionArn: str | None = Field(description="the Step Functions execution that sent it")


class FileOut(BaseModel):
    taskId: str
    index: int
    fileName: str
    outputKey: str
    status: str
    size: int | None = Field(description="bytes copied, or as declared until then")
    sha256: str | None
    error: str | None
    attempts: int
    finishedAt: datetime | None


class FilePage(BaseModel):
    items: list[FileOut]
    cursor: str | None = Field(description="pass as ?filesCursor= for the next page")
    unrecorded: int | None = Field(
        description="files with no record yet (a file is recorded once a worker takes it "
        "or its result is written); given when all files fit on the first page"
    )


class PollOut(BaseModel):
    attempts: int
    nextAt: datetime
    deadline: datetime
    lastError: str | None


class JobDetail(JobOut):
    metadata: dict[str, Any]
    poll: PollOut | None
    dispatching: bool
    waitingWorkflows: list[WaitingWorkflow]
    files: FilePage


class JobList(BaseModel):
    items: list[JobOut]
    cursor: str | None = Field(description="pass as ?cursor= for the next page")


class JobCreated(BaseModel):
    jobId: str
    status: str
    location: str


def job_out(job: ExportJob) -> dict[str, Any]:
    error = job.error
    record = job.callback
    return {
        "jobId": job.job_id,
        "exportId": job.export_id,
        "userId": job.user_id,
        "status": job.status.value,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "completedAt": job.completed_at,
        "totalTasks": job.total_tasks,
        "completedTasks": job.completed_tasks,
        "failedTasks": job.failed_tasks,
        "pendingTasks": job.pending_tasks,
        "error": {"code": error.code, "message": error.message} if error else None,
        "callback": {
            "status": record.status.value,
            "attempts": record.attempts,
            "lastError": record.last_error,
            "at": record.at,
        },
        "hasTaskToken": job.has_task_token(),
        "durationMs": job.duration_ms(),
        "executionArn": job.execution_arn,
    }


def file_out(task: DownloadTask) -> dict[str, Any]:
    return {
        "taskId": task.task_id,
        "index": task.index,
        "fileName": task.file_name,
        "outputKey": task.output_key,
        "status": task.status.value,
        "size": task.bytes if task.bytes is not None else task.expected_size,
        "sha256": task.sha256,
        "error": task.error,
        "attempts": task.attempts,
        "finishedAt": task.finished_at,
    }


def job_detail(
    job: ExportJob, files: list[DownloadTask], cursor: str | None, *, first_page: bool
) -> dict[str, Any]:
    poll = job.poll
    skip = job.answered | job.heartbeat_stopped
    whole = first_page and cursor is None
    return {
        **job_out(job),
        "metadata": dict(job.metadata),
        "poll": {
            "attempts": poll.attempts,
            "nextAt": job.next_poll_at,
            "deadline": poll.deadline,
            "lastError": poll.last_error,
        }
        if poll
        else None,
        "dispatching": job.is_dispatching,
        "waitingWorkflows": [
            {
                "token": token.masked,
                "answered": token.digest() in job.answered,
                "heartbeats": token.digest() not in skip and not job.is_terminal,
            }
            for token in job.tokens()
        ],
        "files": {
            "items": [file_out(t) for t in files],
            "cursor": cursor,
            "unrecorded": max(0, job.total_tasks - len(files)) if whole else None,
        },
    }


class RetryOut(BaseModel):
    jobId: str
    status: str
    retriedFiles: int


class StatsOut(BaseModel):
    jobsByStatus: dict[str, int]
    complete: bool = Field(
        description="false: a status had more jobs than were read; its count is a floor"
    )
    perStatusLimit: int
    jobsRead: int
    filesByStatus: dict[str, int]
    answers: dict[str, int] = Field(description="by outcome, and error code for failures")
    tokenShare: float | None = Field(description="share of the jobs read with a workflow")
    durationMs: dict[str, float | None] = Field(description="p50 and p95 of finished jobs")
    answerLatencyMs: dict[str, float | None] = Field(
        description="p50 and p95 from a job's end to its answer's acknowledgement"
    )


class DeadLetterOut(BaseModel):
    messageId: str
    body: str = Field(description="tokens masked, URL query strings removed")
    receiveCount: int
    reason: str | None


class DeadLetters(BaseModel):
    queue: str
    messages: list[DeadLetterOut]


class RedriveOut(BaseModel):
    queue: str
    method: str = Field(
        description="message-move-task, or receive-send-delete where the "
        "endpoint has no StartMessageMoveTask (e.g. moto)"
    )
    moved: int | None = Field(description="null: SQS moves them in the background")
    taskHandle: str | None
    note: str
