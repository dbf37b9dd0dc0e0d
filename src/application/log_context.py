"""The fields every log line about a job carries: its id and, when the workflow sent it,
its Step Functions execution (so one execution's lines can be found across replicas)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import structlog

from src.domain.export_job import ExportJob


def job_context(job: ExportJob, **more: Any) -> AbstractContextManager[Any]:
    fields: dict[str, Any] = {"job_id": job.job_id, **more}
    if job.execution_arn:
        fields["execution_arn"] = job.execution_arn
    return structlog.contextvars.bound_contextvars(**fields)
