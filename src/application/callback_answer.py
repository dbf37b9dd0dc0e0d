"""The exact answer the workflow gets for a finished job (the external contract)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from src.domain.errors import CALLBACK_ERROR_FOR_CODE, CallbackError, JobErrorCode
from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.time import iso_ms

# Step Functions' own limits, enforced before calling AWS.
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32_768
MAX_OUTPUT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class SuccessAnswer:
    output: dict[str, object]


@dataclass(frozen=True, slots=True)
class FailureAnswer:
    error: str
    cause: str


def success_output(job: ExportJob) -> dict[str, object]:
    assert job.completed_at is not None
    return {
        "jobId": job.job_id,
        "exportId": job.export_id,
        "userId": job.user_id,
        "status": JobStatus.COMPLETED.value,
        "totalTasks": job.total_tasks,
        "completedTasks": job.completed_tasks,
        "failedTasks": job.failed_tasks,
        "completedAt": iso_ms(job.completed_at),
        "durationMs": job.duration_ms(),
    }


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure(error: str, cause: str) -> FailureAnswer:
    return FailureAnswer(_truncate(error, MAX_ERROR_CHARS), _truncate(cause, MAX_CAUSE_CHARS))


def error_name(job: ExportJob) -> str:
    """The error a finished job's workflow is answered with; "" for a success."""
    answer = answer_for(job)
    return answer.error if isinstance(answer, FailureAnswer) else ""


def answer_for(job: ExportJob) -> SuccessAnswer | FailureAnswer:
    """Success only for a COMPLETED job with no failed file; every other end is a failure
    the workflow can Catch by name."""
    if job.status is JobStatus.COMPLETED:
        if job.failed_tasks == 0:
            output = success_output(job)
            if len(json.dumps(output).encode()) > MAX_OUTPUT_BYTES:  # pragma: no cover
                raise ValueError("success output over Step Functions' 256 KiB limit")
            return SuccessAnswer(output)
        return failure(
            CallbackError.COMPLETED_WITH_FAILURES,
            f"Job completed with {job.failed_tasks} failed tasks out of {job.total_tasks} total",
        )
    if not job.is_terminal:
        raise ValueError(f"job {job.job_id} is {job.status}, not finished")
    code = job.error.code if job.error else JobErrorCode.PROCESSING_ERROR
    message = job.error.message if job.error else f"Job ended {job.status.value}"
    if job.status is JobStatus.CANCELLED:
        return failure(CallbackError.JOB_CANCELLED, message)
    return failure(CALLBACK_ERROR_FOR_CODE.get(code, CallbackError.PROCESSING_ERROR), message)
