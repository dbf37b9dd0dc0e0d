"""Ready-made jobs for the unit tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from src.domain.export_job import ExportJob
from src.domain.job_status import JobStatus
from src.domain.task_token import TaskToken
from tests.fakes import T0

JOB_ID = "123e4567-e89b-12d3-a456-426614174000"
EXPORT_ID = "exp-42"
USER_ID = "user-7"
RAW_TOKEN = "AAAAKgAAAAIAAAAAAAAAAcRvZ3YjUx9mZX5rT2ZpbGVzL2V4cG9ydC1qb2JzLTEyMzQ1Njc4OTAAAA"


def a_job(
    *,
    status: JobStatus = JobStatus.PROCESSING,
    token: str | None = RAW_TOKEN,
    total: int = 0,
    completed: int = 0,
    failed: int = 0,
    now: datetime = T0,
    job_id: str = JOB_ID,
) -> ExportJob:
    """A job as it would be stored: created at `now`, then set to `status` and counters."""
    job = ExportJob.create(
        job_id=job_id,
        export_id=EXPORT_ID,
        user_id=USER_ID,
        now=now,
        metadata={"requestedBy": "workflow", "format": "csv"},
        task_token=TaskToken(token) if token else None,
    )
    return replace(
        job, status=status, total_tasks=total, completed_tasks=completed, failed_tasks=failed
    )
